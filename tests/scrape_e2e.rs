//! End-to-end: scrapes of `/metrics` that never read are bounded (issue 20). With
//! `prometheus.max_concurrent_scrapes = 2` and `prometheus.scrape_write_timeout = "1s"`, two
//! connections that ask for `/metrics` and never read hold both permits, a third scrape is
//! answered 503 with `Retry-After: 1` at once, `/health/live` keeps answering, and after the
//! timeout the renders stop, a normal scrape succeeds and the timeouts are counted. Loopback
//! only; every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::{http_bytes, value, Tallyd};
use socket2::{Domain, Protocol, Socket, Type};

/// Distinct counters, each its own family with long labels, so the body (megabytes) does not
/// fit the socket buffers, the server's write buffer and the 4 queued pieces.
const SERIES: usize = 30_000;

/// A connection with a tiny receive buffer that sends `GET /metrics` and never reads.
fn stalled_scrape(addr: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    s.set_recv_buffer_size(2048).expect("SO_RCVBUF");
    s.connect_timeout(&addr.into(), Duration::from_secs(5))
        .expect("connect");
    let mut s: TcpStream = s.into();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("request");
    s
}

fn load_series(t: &Tallyd) {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    let to = t.udp.expect("udp listener");
    let pad = "x".repeat(120);
    let mut packet = String::new();
    for i in 0..SERIES {
        packet.push_str(&format!(
            "scrape.bound.series_{i}:1|c|#host:h{i},pad:{pad}\n"
        ));
        if packet.len() > 1200 {
            udp.send_to(packet.as_bytes(), to).expect("udp send");
            packet.clear();
            if i % 200 == 0 {
                // Paced, so the receive buffer never overflows.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    if !packet.is_empty() {
        udp.send_to(packet.as_bytes(), to).expect("udp send");
    }
}

#[test]
fn stalled_scrapes_are_capped_and_time_out() {
    let t = Tallyd::start(
        "[prometheus]\nmax_concurrent_scrapes = 2\nscrape_write_timeout = \"1s\"\n\
         [statsd]\nmax_packet_size = 8192\n",
    );
    load_series(&t);
    // Most series reached the exposition (a few UDP losses would only shrink the body). The
    // gauge can run a window ahead of the rows a scrape copied, so the body is checked itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = t.metrics();
        let exposed = value(&text, "tallyd_prometheus_series").unwrap_or(0.0);
        if exposed >= SERIES as f64 * 0.95 && text.len() > 4 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{exposed} series exposed, a body of {} bytes",
            text.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut stalled = [stalled_scrape(t.http), stalled_scrape(t.http)];
    // Both hold their permits once their response has begun (the status line is written
    // after the permit is taken); twelve bytes read leave megabytes unread.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut status = [0u8; 12];
        s.read_exact(&mut status).expect("status line");
        assert_eq!(
            &status, b"HTTP/1.1 200",
            "a stalled scrape began its answer"
        );
    }
    let (status, headers, _) = http_bytes(t.http, "GET", "/metrics", &[], b"");
    assert_eq!(
        status, 503,
        "a third scrape over the cap is refused, not queued"
    );
    assert!(
        headers.iter().any(|(k, v)| k == "retry-after" && v == "1"),
        "{headers:?}"
    );
    assert_eq!(t.get("/health/live").0, 200);

    // After the write timeout both renders stop and release their permits.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, text) = t.get("/metrics");
        if status == 200 {
            break text;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "no scrape succeeded after the timeout"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.len() > 4 << 20, "a normal scrape gets the whole body");
    assert_eq!(
        value(&text, "tallyd_prometheus_scrapes_total{result=\"timeout\"}"),
        Some(2.0),
        "both stalled scrapes timed out"
    );
    assert!(
        value(&text, "tallyd_prometheus_scrapes_total{result=\"refused\"}")
            .is_some_and(|n| n >= 1.0)
    );

    // A timed-out scrape never ends like a whole one: when its scraper finally reads, the
    // connection closes without the final chunk.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        // (Its status line was read above.)
        assert!(!raw.is_empty(), "the rest of the started response arrives");
        assert!(
            !raw.ends_with(b"\r\n0\r\n\r\n"),
            "a timed-out body must not end like a complete one"
        );
    }
}
