//! End-to-end: the real binary, real UDP/TCP/Unix sockets, real scrapes of /metrics.

mod common;

use common::{http_headers, value, Tallyd};
use std::os::unix::net::UnixDatagram;

#[test]
fn udp_counter_reaches_metrics() {
    let t = Tallyd::start("");
    t.send_udp("test.metric:1|c\n");
    t.wait_value("test_metric_total", 1.0);
    t.send_udp("test.metric:2|c");
    t.wait_value("test_metric_total", 3.0);
}

#[test]
fn tcp_and_unix_socket_give_the_same_result() {
    let t = Tallyd::start("[statsd]\nunix_socket = \"@DIR@/dsd.socket\"\n");
    t.send_tcp("test.metric:1|c\n");
    t.wait_value("test_metric_total", 1.0);
    let sock = UnixDatagram::unbound().expect("unix socket");
    sock.send_to(b"test.metric:1|c", t.path("dsd.socket"))
        .expect("uds send");
    let text = t.wait_value("test_metric_total", 2.0);
    assert_eq!(
        value(&text, "tallyd_statsd_lines_total{transport=\"uds\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "tallyd_statsd_lines_total{transport=\"tcp\"}"),
        Some(1.0)
    );
}

#[test]
fn full_grammar_with_bad_lines_mixed_in() {
    let t = Tallyd::start("");
    let packet = "\
req:1|c|#route:/a,env:prod\r\n\
req:1|c|@0.5|#env:prod,route:/a\n\
not a metric\n\
lat:10:20:30:40|ms|#db:main\n\
lat:oops|ms\n\
size:5|h|@0.25\n\
temp:21.5|g\n\
temp:-3|g\n\
users:alice|s\n\
users:bob|s\n\
users:alice|s\n\
dist:1:2:3:4:5:6:7:8:9:10|d|T1700000000|c:abc|card:high\n\
_e{5,4}:title|text|#a:b\n\
_sc|db.up|0|#env:prod\n\
x:1|q\n";
    t.send_udp(packet);
    let text = t.wait_value("req_total{env=\"prod\",route=\"/a\"}", 3.0);
    let text = if value(&text, "dist_count") == Some(10.0) {
        text
    } else {
        t.wait_value("dist_count", 10.0)
    };
    assert_eq!(
        value(&text, "lat{db=\"main\",quantile=\"0.5\"}"),
        Some(20.0)
    );
    assert_eq!(
        value(&text, "lat{db=\"main\",quantile=\"0.99\"}"),
        Some(40.0)
    );
    assert_eq!(value(&text, "lat_sum{db=\"main\"}"), Some(100.0));
    assert_eq!(value(&text, "lat_count{db=\"main\"}"), Some(4.0));
    assert_eq!(value(&text, "size_count"), Some(4.0));
    assert_eq!(value(&text, "size_sum"), Some(20.0));
    assert_eq!(value(&text, "temp"), Some(-3.0));
    assert_eq!(value(&text, "users"), Some(2.0));
    assert_eq!(value(&text, "dist{quantile=\"0.5\"}"), Some(5.0));
    assert_eq!(value(&text, "dist_sum"), Some(55.0));
    assert_eq!(
        value(
            &text,
            "tallyd_statsd_parse_errors_total{reason=\"invalid_format\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "tallyd_statsd_parse_errors_total{reason=\"invalid_value\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "tallyd_statsd_parse_errors_total{reason=\"invalid_type\"}"
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, "tallyd_statsd_events_total"), Some(1.0));
    assert_eq!(
        value(&text, "tallyd_statsd_service_checks_total"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "tallyd_statsd_lines_total{transport=\"udp\"}"),
        Some(15.0)
    );
}

#[test]
fn delta_gauges_when_configured() {
    let t = Tallyd::start("[statsd]\ngauge_mode = \"delta\"\n");
    t.send_udp("g:10|g");
    t.wait_value("g", 10.0);
    t.send_udp("g:+5|g\ng:-2|g");
    t.wait_value("g", 13.0);
}

#[test]
fn a_large_scrape_streams_in_pieces_and_a_small_one_has_a_length() {
    let t = Tallyd::start("");
    t.send_udp("small:1|c");
    t.wait_value("small_total", 1.0);
    let header = |name: &str| {
        http_headers(t.http, "/metrics", &[])
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    };
    assert!(header("content-length").is_some());
    // Enough series for several 64 KiB pieces.
    let n = 3000;
    let lines: String = (0..n)
        .map(|i| format!("big.series_{i}:{i}|c|#host:web-{i}\n"))
        .collect();
    t.send_tcp(&lines);
    let last = format!("big_series_{}_total{{host=\"web-{}\"}}", n - 1, n - 1);
    t.wait_value(&last, (n - 1) as f64);
    assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(header("content-length"), None);
    let text = t.metrics();
    assert!(text.len() > 4 * 64 * 1024, "{}", text.len());
    for i in 0..n {
        let series = format!("big_series_{i}_total{{host=\"web-{i}\"}}");
        assert_eq!(value(&text, &series), Some(i as f64), "{series}");
    }
    assert!(text.contains("\ntallyd_build_info{"));
}

#[test]
fn openmetrics_when_asked() {
    let t = Tallyd::start("");
    t.send_udp("hits:2|c");
    t.wait_value("hits_total", 2.0);
    let h = http_headers(
        t.http,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    let ct = h
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let (_, body) = common::http_request(
        t.http,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text; version=1.0.0,text/plain;q=0.5",
        )],
        "",
    );
    assert!(body.contains("# TYPE hits counter\n"), "{body}");
    assert!(body.ends_with("# EOF\n"));
    let plain = t.metrics();
    assert!(plain.contains("# TYPE hits_total counter\n"));
    assert!(!plain.contains("# EOF"));
}

#[test]
fn health_endpoints() {
    let t = Tallyd::start("");
    let (code, body) = t.get("/health");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    // Every component is ok; the one part that depends on the machine rather than on tallyd is
    // the descriptor budget (`fd_limit` is degraded where the hard RLIMIT_NOFILE cannot hold the
    // default caps), and then it alone makes the whole degraded.
    let fd_short = v["components"]["fd_limit"]["status"] == "degraded";
    let others_ok = v["components"]
        .as_object()
        .expect("components")
        .iter()
        .filter(|(name, _)| name.as_str() != "fd_limit")
        .all(|(_, c)| c["status"] == "ok" || c["status"] == "disabled");
    assert!(others_ok, "{body}");
    assert_eq!(
        v["status"],
        if fd_short { "degraded" } else { "ok" },
        "{body}"
    );
    assert_eq!(v["components"]["statsd_udp"]["status"], "ok");
    assert_eq!(v["components"]["statsd_uds"]["status"], "disabled");
    assert_eq!(t.get("/health/live").0, 200);
    assert_eq!(t.get("/health/ready").0, 200);
    assert_eq!(t.get("/nope").0, 404);
}

#[test]
fn sigterm_flushes_and_exits_zero() {
    // GPS off: its metrics would add series to the flush counted here.
    let mut t = Tallyd::start("[aggregate]\nflush_interval = \"1h\"\n[gps]\nenabled = false\n");
    t.send_udp("late:1|c");
    // A TCP client that keeps its connection open through the shutdown.
    let mut open = std::net::TcpStream::connect(t.tcp.expect("tcp")).expect("connect");
    std::io::Write::write_all(&mut open, b"tcp.late:1|c\n").expect("write");
    // Both lines received (counted when read, before the window closes in an hour): SIGTERM
    // must drain and flush them.
    t.wait_metrics(
        |m| {
            value(m, "tallyd_statsd_lines_total{transport=\"udp\"}") == Some(1.0)
                && value(m, "tallyd_statsd_lines_total{transport=\"tcp\"}") == Some(1.0)
        },
        "both lines received",
    );
    let status = t.terminate();
    assert!(status.success(), "{status}");
    let logs = t.logs().join("\n");
    let last = t
        .logs()
        .into_iter()
        .find(|l| l.contains("final flush done"))
        .unwrap_or_else(|| panic!("{logs}"));
    let v: serde_json::Value = serde_json::from_str(&last).expect("json log");
    assert_eq!(v["fields"]["series"], 2, "{last}");
    assert!(logs.contains("\"stopped\""), "{logs}");
}

#[test]
fn port_in_use_is_one_clear_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let config = format!(
        "[statsd]\nudp_listen = \"\"\ntcp_listen = \"\"\n[gps]\nenabled = false\n[otlp]\nenabled = false\n[http]\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).expect("write");
    let out = common::command()
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("http.listen"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("in use"), "{err}");
}

#[test]
fn tcp_limits_line_length_idle_and_connections() {
    let t = Tallyd::start(
        "[statsd]\ntcp_max_line_length = 64\ntcp_idle_timeout = \"2s\"\ntcp_max_connections = 2\n",
    );
    use std::io::Write;
    let tcp = t.tcp.expect("tcp");
    // An over-long line is skipped up to its newline; the connection and later lines go on.
    let mut s = std::net::TcpStream::connect(tcp).expect("connect");
    let long = format!("long:{}|c\nok.after:1|c\n", "1".repeat(200));
    s.write_all(long.as_bytes()).expect("write");
    // A line split across writes still counts: the second half is sent once tallyd has read
    // the first (its byte count shows it), so the two halves arrive in separate reads.
    s.write_all(b"split:").expect("write");
    let read_so_far = (long.len() + "split:".len()) as f64;
    t.wait_value("tallyd_statsd_bytes_total{transport=\"tcp\"}", read_so_far);
    s.write_all(b"1|c\n").expect("write");
    let text = t.wait_value("ok_after_total", 1.0);
    let text = if value(&text, "split_total") == Some(1.0) {
        text
    } else {
        t.wait_value("split_total", 1.0)
    };
    assert_eq!(
        value(
            &text,
            "tallyd_statsd_parse_errors_total{reason=\"line_too_long\"}"
        ),
        Some(1.0)
    );

    // Two connections are open (s and one more); a third is refused at once.
    let _second = std::net::TcpStream::connect(tcp).expect("connect");
    t.wait_metrics(
        |m| value(m, "tallyd_tcp_connections_active") == Some(2.0),
        "two open connections",
    );
    let mut third = std::net::TcpStream::connect(tcp).expect("connect");
    assert!(closed_by_server(&mut third), "refused connection is closed");
    t.wait_metrics(
        |m| value(m, "tallyd_tcp_connections_refused_total") == Some(1.0),
        "refused counted",
    );

    // Idle connections are closed after the timeout (both: s and the second).
    assert!(closed_by_server(&mut s), "idle connection closed");
    t.wait_metrics(
        |m| {
            value(m, "tallyd_tcp_idle_closed_total") == Some(2.0)
                && value(m, "tallyd_tcp_connections_active") == Some(0.0)
        },
        "idle closes counted",
    );
}

/// Whether the server closes `s` (EOF or reset) within 5 s; a read that times out is `false`,
/// not "closed".
fn closed_by_server(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn oversized_datagram_is_truncated_and_counted() {
    let t = Tallyd::start("[statsd]\nmax_packet_size = 512\n");
    let mut packet = String::from("first:1|c\n");
    while packet.len() < 600 {
        packet.push_str("filler:1|c\n");
    }
    t.send_udp(&packet);
    let text = t.wait_value("first_total", 1.0);
    assert_eq!(value(&text, "tallyd_statsd_udp_truncated_total"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "tallyd_statsd_parse_errors_total{reason=\"truncated\"}"
        ),
        Some(1.0)
    );
    // 512 bytes hold 1 + 46 whole lines (11 bytes each) and one cut line, which is rejected.
    assert_eq!(value(&text, "filler_total"), Some(45.0));
}

#[test]
fn context_limit_drops_are_counted() {
    // GPS off: its metrics would take the two contexts.
    let t = Tallyd::start("[aggregate]\nmax_contexts = 2\n[gps]\nenabled = false\n");
    t.send_udp("a:1|c\nb:1|c\nc:1|c\nd:1:1|h");
    let text = t.wait_value("a_total", 1.0);
    assert_eq!(
        value(
            &text,
            "tallyd_aggregate_samples_dropped_total{reason=\"context_limit\"}"
        ),
        Some(3.0)
    );
    assert_eq!(value(&text, "b_total"), Some(1.0));
    assert_eq!(value(&text, "c_total"), None);
}

#[test]
fn same_name_as_two_types_keeps_both() {
    let t = Tallyd::start("");
    t.send_udp("dual:1|c\ndual:5|ms\n");
    let text = t.wait_value("dual_total", 1.0);
    let text = if value(&text, "dual_timer_count") == Some(1.0) {
        text
    } else {
        t.wait_value("dual_timer_count", 1.0)
    };
    assert!(text.contains("# TYPE dual_timer summary"), "{text}");
    assert_eq!(
        value(&text, "tallyd_prometheus_conflicting_series"),
        Some(0.0)
    );
}
