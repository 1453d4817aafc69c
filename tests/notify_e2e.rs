//! systemd's notify protocol without systemd: `NOTIFY_SOCKET` points at a datagram socket this
//! test reads, and `WATCHDOG_USEC` asks for the watchdog. READY=1 comes once every listener is
//! bound (each "listening" line is logged before it), the listeners answer, WATCHDOG=1 comes
//! every half WATCHDOG_USEC, RELOADING=1 (with MONOTONIC_USEC) and READY=1 bracket a SIGHUP
//! reload, and STOPPING=1 comes on SIGTERM before the process exits.

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::Tallyd;

/// Every datagram received, with when.
type Received = Arc<Mutex<Vec<(SystemTime, Instant, String)>>>;

fn listen(path: &std::path::Path) -> Received {
    let sock = UnixDatagram::bind(path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let got: Received = Arc::default();
    let sink = Arc::clone(&got);
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock()
                    .expect("received")
                    .push((SystemTime::now(), Instant::now(), text));
            }
        }
    });
    got
}

fn wait_for(got: &Received, what: &str, pred: impl Fn(&[(SystemTime, Instant, String)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if pred(&got.lock().expect("received")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            got.lock()
                .expect("received")
                .iter()
                .map(|r| &r.2)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has(msg: &str, state: &str) -> bool {
    msg.lines().any(|l| l == state)
}

#[test]
fn ready_watchdog_reloading_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("notify.sock");
    let got = listen(&path);
    let socket = path.display().to_string();
    let mut t = Tallyd::start_raw(
        common::BASE_CONFIG,
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "400000")],
    );

    // READY=1, once, after every listener was bound.
    wait_for(&got, "READY=1", |r| r.iter().any(|m| has(&m.2, "READY=1")));
    let ready_at = {
        let r = got.lock().expect("received");
        let readies: Vec<_> = r.iter().filter(|m| has(&m.2, "READY=1")).collect();
        assert_eq!(readies.len(), 1, "one READY=1 at start");
        assert!(readies[0].2.contains("STATUS="), "{}", readies[0].2);
        readies[0].0
    };
    let mut listeners = 0;
    for line in t.logs() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] != "listening" {
            continue;
        }
        listeners += 1;
        let at =
            humantime::parse_rfc3339(v["timestamp"].as_str().expect("timestamp")).expect("rfc3339");
        assert!(at <= ready_at, "bound after READY=1: {line}");
    }
    assert!(listeners >= 6, "every listener logged: {:#?}", t.logs());
    // And they answer.
    assert_eq!(t.get("/health/ready").0, 200);
    t.send_tcp("notify.tcp:1|c\n");
    t.send_udp("notify.udp:1|c");
    t.wait_metrics(
        |m| {
            common::value(m, "notify_tcp_total") == Some(1.0)
                && common::value(m, "notify_udp_total") == Some(1.0)
        },
        "both counters",
    );
    assert!(std::net::TcpStream::connect(t.gps.expect("gps")).is_ok());
    assert!(std::net::TcpStream::connect(t.otlp_grpc.expect("otlp grpc")).is_ok());

    // WATCHDOG=1 every half WATCHDOG_USEC (200 ms): a few in a row, none far apart.
    wait_for(&got, "5 watchdog pings", |r| {
        r.iter().filter(|m| has(&m.2, "WATCHDOG=1")).count() >= 5
    });
    let pings: Vec<Instant> = got
        .lock()
        .expect("received")
        .iter()
        .filter(|m| has(&m.2, "WATCHDOG=1"))
        .map(|m| m.1)
        .collect();
    // The median gap, not each one: on a loaded machine this test's reader may take two queued
    // datagrams at once. Loose bounds around 200 ms; the machine is shared.
    let mut gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        median >= Duration::from_millis(100) && median <= Duration::from_millis(1000),
        "median watchdog gap {median:?} of {gaps:?}"
    );

    // A reload is bracketed: RELOADING=1 with MONOTONIC_USEC, then READY=1.
    let pid = libc::pid_t::try_from(t.pid()).expect("pid");
    // SAFETY: kill only sends a signal to the child this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for(&got, "RELOADING=1 then READY=1", |r| {
        let Some(i) = r.iter().position(|m| has(&m.2, "RELOADING=1")) else {
            return false;
        };
        r[i].2.lines().any(|l| l.starts_with("MONOTONIC_USEC="))
            && r[i + 1..].iter().any(|m| has(&m.2, "READY=1"))
    });

    // SIGTERM: STOPPING=1, then a clean exit.
    let status = t.terminate();
    assert!(status.success(), "{status:?}");
    wait_for(&got, "STOPPING=1", |r| {
        r.iter().any(|m| has(&m.2, "STOPPING=1"))
    });
}
