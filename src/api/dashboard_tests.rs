//! Unit tests of the dashboard API (`dashboard.rs`): the totals, the platform fields, the rates.

use super::*;
use crate::base::metrics::{Collect, Families};
use crate::queue::deliver::BoxFuture;
use crate::queue::store::Limits;
use crate::queue::{Attempt, Backoff, Deliver, Meta, Queue};
use crate::telemetry::Transport;

/// Families a GPS server and a forwarder would add.
struct Extra;

impl Collect for Extra {
    fn collect(&self, out: &mut Families) {
        out.counter("tallyd_gps_messages", "frames").value(9.0);
        out.counter("tallyd_gps_invalid_messages", "bad frames")
            .value(2.0);
        out.counter("tallyd_forwarder_payloads_dropped", "dropped")
            .by("queue", [("datadog", 3.0), ("otlp", 1.0)]);
        // A gauge named like a drop counter is not one.
        out.gauge("tallyd_fake_dropped", "not a counter")
            .value(50.0);
    }
}

struct Never;

impl Deliver for Never {
    fn deliver<'a>(&'a self, _: &'a Meta, _: Vec<u8>) -> BoxFuture<'a, Attempt> {
        Box::pin(async { Attempt::Delivered { status: 202 } })
    }
}

fn sources(dir: &std::path::Path) -> Sources {
    let telemetry = Arc::new(Telemetry::default());
    telemetry.transports[Transport::Udp as usize]
        .lines
        .store(7, Relaxed);
    telemetry.transports[Transport::Tcp as usize]
        .lines
        .store(4, Relaxed);
    telemetry.samples.store(10, Relaxed);
    telemetry.parse_errors[0].store(1, Relaxed);
    telemetry.udp_truncated.store(5, Relaxed);
    telemetry.register(Arc::new(Extra));
    let q = Arc::new(
        Queue::open(
            dir,
            "datadog",
            Limits {
                max_bytes: 1 << 20,
                dlq_max_bytes: 1 << 20,
            },
        )
        .expect("queue"),
    );
    for _ in 0..3 {
        q.push(Meta::default(), b"payload").expect("push");
    }
    let head = q.head().expect("head");
    let (meta, body) = q.load(head.seq).expect("load");
    q.reject(head.seq, meta, &body, 400, "no").expect("reject");
    let queues = Arc::new(Registry::default());
    queues.add(Arc::new(crate::queue::sender::Handle {
        queue: q,
        deliver: Arc::new(Never),
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(2),
        },
    }));
    let health = Arc::new(Health::default());
    health.set("statsd_udp", Status::Ok, "127.0.0.1:8125");
    health.set(
        "remote_write",
        Status::Disabled,
        "remote_write.url is empty",
    );
    Sources {
        telemetry,
        health,
        queues,
        alerts: None,
        gps: None,
        history: History::new(),
    }
}

#[test]
fn a_point_sums_what_metrics_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = sources(dir.path());
    let families = src.telemetry.snapshot();
    let p = point(&src, &families, 1_000);
    assert_eq!(
        p,
        Point {
            t_ms: 1_000,
            statsd_udp: 7,
            statsd_tcp: 4,
            statsd_uds: 0,
            otlp_requests: 0,
            gps_messages: 9,
            samples: 10,
            // One StatsD line and two GPS frames.
            parse_errors: 3,
            // 5 truncated datagrams and 4 payloads; the gauge is not counted.
            drops: 9,
            queue_pending: 2,
            queue_dlq: 1,
            alerts_firing: 0,
            alerts_pending: 0,
            active_devices: 0,
        }
    );
    let errors = parse_errors(&families);
    assert_eq!(errors["gps:invalid"], 2);
    assert_eq!(errors.values().sum::<u64>(), 3);
    let d = drops(&families);
    assert_eq!(d["tallyd_forwarder_payloads_dropped"], 4);
    assert!(!d.contains_key("tallyd_fake_dropped"));
}

#[test]
fn the_queue_part_has_the_platform_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = sources(dir.path());
    let q = queues(&src);
    let dd = &q["queues"]["datadog"];
    assert_eq!(dd["pending"], 2);
    assert_eq!(dd["processing"], 0);
    assert_eq!(dd["dlq_size"], 1);
    assert_eq!(dd["status"], "degraded", "{q:#}");
    assert_eq!(dd["dlq_status"], "has_dead_letters");
    assert_eq!(q["status"], "degraded");
    assert_eq!(q["summary"]["total_pending"], 2);
    assert_eq!(q["summary"]["total_dlq"], 1);
    assert_eq!(q["dlq"]["status"], "has_dead_letters");
    assert_eq!(q["dlq"]["queues_with_dead_letters"][0], "datadog");

    let empty = Sources {
        queues: Arc::new(Registry::default()),
        ..src
    };
    let q = queues(&empty);
    assert_eq!(q["status"], "healthy");
    assert_eq!(q["summary"]["total_dlq"], 0);
    assert_eq!(q["dlq"]["status"], "empty");
}

#[test]
fn the_dashboard_speaks_the_platform_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = sources(dir.path());
    let d = build(&src);
    assert_eq!(d["platform_health"]["status"], "unhealthy", "not ready yet");
    assert_eq!(d["platform_health"]["components_checked"], 2);
    assert!(d["platform_health"]["issues"][0]
        .as_str()
        .is_some_and(|s| s.contains("not ready")));
    src.health.set_ready(true);
    src.health
        .set("datadog", Status::Degraded, "3 failed attempts");
    let d = build(&src);
    assert_eq!(d["platform_health"]["status"], "degraded");
    assert_eq!(
        d["platform_health"]["issues"][0],
        "datadog: 3 failed attempts"
    );
    assert_eq!(
        d["platform_health"]["components"]["remote_write"]["status"],
        "disabled"
    );
    assert!(d["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        d["live_tracking"],
        json!({"active_devices": 0, "messages_per_second": 0.0, "queue_pending": 0, "dlq_size": 0})
    );
    assert_eq!(
        d["gps_tcp_server"],
        json!({"status": "disabled", "active_connections": 0, "messages_total": 9, "devices_total": 0})
    );
    assert_eq!(d["ingest"]["transports"]["statsd_udp"]["total"], 7);
    assert_eq!(d["ingest"]["transports"]["gps_tcp"]["unit"], "frames");
    assert_eq!(d["ingest"]["parse_errors"]["total"], 3);
    assert_eq!(d["ingest"]["drops"]["total"], 9);
    assert_eq!(d["alerts"]["enabled"], false);
    assert_eq!(d["alerts"]["firing_count"], 0);
    assert_eq!(d["queues"]["summary"]["total_dlq"], 1);
    assert!(d["last_reload"].is_null());

    src.health.set_reload(crate::base::health::LastReload {
        at_unix: 1_767_225_600,
        trigger: "signal",
        result: "ok",
        error: None,
        applied: vec!["alerts.rules".into()],
        restart_required: vec![],
    });
    let d = build(&src);
    assert_eq!(d["last_reload"]["result"], "ok");
    assert_eq!(d["last_reload"]["at_unix"], 1_767_225_600);
    assert_eq!(d["last_reload"]["trigger"], "signal");
}

#[test]
fn rates_come_from_the_ring() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = sources(dir.path());
    let families = src.telemetry.snapshot();
    src.history.push(point(&src, &families, 0));
    src.telemetry.transports[Transport::Udp as usize]
        .lines
        .store(57, Relaxed);
    let families = src.telemetry.snapshot();
    src.history.push(point(&src, &families, 10_000));
    let d = build(&src);
    assert_eq!(d["ingest"]["transports"]["statsd_udp"]["per_second"], 5.0);
    let h = history_view(&src.history);
    assert_eq!(h["interval_seconds"], 5);
    assert_eq!(h["capacity"], 120);
    let rows = h["points"].as_array().expect("points");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["statsd_lines_per_second"], 5.0);
    assert_eq!(rows[0]["queue_dlq"], 1);
}
