//! One real tallyd with every component on, run once per test binary, and what it exports:
//! the families and samples of `/metrics` and the series the Datadog intake stand-in received.
//! Components: StatsD (UDP, TCP, Unix socket), GPS with a points file and a points URL, OTLP,
//! Datadog delivery to the intake stand-in, remote_write, OTLP export and a webhook notifier to
//! a closed port, host metrics, an alert rule that keeps firing (uptime above 0). Traffic:
//! StatsD lines (one bad), a GPS device with a valid and an invalid fix, and a GPS connection
//! closed before it identified itself. Used by tests/dashboards.rs and tests/docs.rs.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::intake::Intake;
use crate::common::Tallyd;

pub type Labels = BTreeMap<String, String>;

pub struct Exported {
    /// Sample name (`x_total`, `x_bucket`, ...) -> the label sets seen on it.
    pub samples: HashMap<String, Vec<Labels>>,
    /// Family name as in `# TYPE` -> its type.
    pub families: HashMap<String, String>,
    /// Metric name the Datadog intake received -> the tag keys seen on it.
    pub datadog: HashMap<String, BTreeSet<String>>,
}

pub fn root(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(root(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `name{a="b",c="d"} value` -> (name, labels).
fn parse_sample(line: &str) -> Option<(String, Labels)> {
    let end = line.find(['{', ' '])?;
    let name = line[..end].to_string();
    let mut labels = Labels::new();
    if line[end..].starts_with('{') {
        let mut rest = &line[end + 1..];
        loop {
            rest = rest.trim_start_matches(',');
            if rest.starts_with('}') || rest.is_empty() {
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].to_string();
            rest = rest[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let close = loop {
                match chars.next()? {
                    (_, '\\') => {
                        let (_, c) = chars.next()?;
                        value.push(match c {
                            'n' => '\n',
                            c => c,
                        });
                    }
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key, value);
            rest = &rest[close + 1..];
        }
    }
    Some((name, labels))
}

fn nmea(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n").into_bytes()
}

pub fn exported() -> &'static Exported {
    static ONCE: OnceLock<Exported> = OnceLock::new();
    ONCE.get_or_init(run_tallyd)
}

/// The everything-on tallyd, running, with its traffic sent and seen on /metrics.
pub struct Running {
    pub tallyd: Tallyd,
    pub intake: Intake,
    /// The last scrape, which has everything the traffic makes.
    pub text: String,
    _closed: crate::common::ClosedPort,
    _device: std::net::TcpStream,
}

/// Starts the everything-on tallyd and sends its traffic (see the module comment).
pub fn start_everything() -> Running {
    use std::io::Write;
    let intake = Intake::start("0123456789abcdef0123456789abcdef");
    let closed = crate::common::closed_port();
    let t = Tallyd::start(&format!(
        r#"
[statsd]
unix_socket = "@DIR@/dsd.socket"
[gps]
points_file = "@DIR@/points.ndjson"
points_url = "http://127.0.0.1:{port}/points"
[queue]
directory = "@DIR@/queue"
[datadog]
api_key = "0123456789abcdef0123456789abcdef"
url = "{intake}"
[remote_write]
url = "http://127.0.0.1:{port}/api/v1/write"
[otlp_export]
enabled = true
endpoint = "http://127.0.0.1:{port}"
[host_metrics]
enabled = true
[alerts.notifiers.hook]
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
[[alerts.rules]]
name = "DashUptime"
metric = "tallyd_uptime_seconds"
aggregation = "last"
warn = 0.0
"#,
        intake = intake.url(),
        port = closed.port,
    ));
    t.send_udp("dash.requests:1|c|#route:home\ndash.latency:12|ms\nnot a metric\n");
    t.send_tcp("dash.requests:1|c|#route:tcp\n");
    let mut device = std::net::TcpStream::connect(t.gps.expect("gps")).expect("gps connect");
    device.write_all(&nmea("PGID,dash-1")).expect("id");
    let fix = "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W";
    device.write_all(&nmea(fix)).expect("fix");
    device.write_all(b"$GPRMC,bad*00\r\n").expect("bad fix");
    drop(std::net::TcpStream::connect(t.gps.expect("gps")).expect("gps connect"));

    // Everything the traffic makes has arrived: on /metrics and at the intake.
    let text = t.wait_metrics(
        |m| {
            m.contains("gps_tcp_messages_invalid_total{")
                && m.contains("live_latency_count")
                && m.contains("tallyd_forwarder_queue_depth{queue=\"otlp\"}")
                && m.contains("dash_requests_total")
                && m.contains("gps_tcp_connections_failed_total{")
                && m.contains("tallyd_alert_state{alert=\"DashUptime\"")
                && m.contains("tallyd_forwarder_queue_depth{queue=\"live_points\"}")
        },
        "GPS, live points, every queue and StatsD on /metrics",
    );
    Running {
        tallyd: t,
        intake,
        text,
        _closed: closed,
        _device: device,
    }
}

fn run_tallyd() -> Exported {
    let Running {
        tallyd: mut t,
        intake,
        text,
        ..
    } = start_everything();
    let want = [
        "gps_tcp.messages_invalid",
        "live.latency.avg",
        "live.points_processed",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !want
        .iter()
        .all(|w| intake.accepted().series.iter().any(|s| s.metric == *w))
    {
        assert!(
            Instant::now() < deadline,
            "the intake did not receive {want:?}: {:?}",
            intake
                .accepted()
                .series
                .iter()
                .map(|s| s.metric.clone())
                .collect::<BTreeSet<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.terminate();

    let mut samples: HashMap<String, Vec<Labels>> = HashMap::new();
    let mut families = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                families.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, labels) =
                parse_sample(line).unwrap_or_else(|| panic!("unparsable sample line {line:?}"));
            samples.entry(name).or_default().push(labels);
        }
    }
    let mut datadog: HashMap<String, BTreeSet<String>> = HashMap::new();
    let accepted = intake.accepted();
    let tagged = accepted
        .series
        .iter()
        .map(|s| (&s.metric, &s.tags))
        .chain(accepted.sketches.iter().map(|s| (&s.metric, &s.tags)));
    for (metric, tags) in tagged {
        let keys = datadog.entry(metric.clone()).or_default();
        for tag in tags {
            keys.insert(tag.split(':').next().unwrap_or(tag).to_string());
        }
    }
    Exported {
        samples,
        families,
        datadog,
    }
}
