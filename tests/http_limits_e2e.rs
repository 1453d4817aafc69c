//! The HTTP servers' bounds from a hostile peer's side (issue 20, defect 2 and the HTTP part
//! of the security pass), against the real binary on loopback: slowloris from one address
//! does not starve `/health/live` or StatsD; a low `RLIMIT_NOFILE` with caps that do not fit
//! is reported and 1,100 idle HTTP connections do not take the other listeners' descriptors;
//! TLS on the HTTP API and both OTLP receivers with a self-signed certificate.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http_request, value, Tallyd, BASE_CONFIG};

/// Connects to `to` from 127.0.0.`host` (loopback has the whole /8).
fn connect_from(to: SocketAddr, host: u8) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("127.0.0.{host}:0").parse().expect("addr");
    sock.bind(&from.into()).expect("bind source address");
    sock.connect(&to.into()).expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s
}

/// True when the server closed `s` (EOF or reset) within the read timeout; whatever it sent
/// before closing is ignored.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Polls `f` every 50 ms until it is true, for at most `secs`.
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lifts this test process's own soft descriptor limit (it opens 1,100 sockets).
fn raise_own_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read or write one valid, local `rlimit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(lim.rlim_max >= 2048, "the test needs a hard limit of 2048");
}

fn rejected(text: &str, server: &str, reason: &str) -> f64 {
    value(
        text,
        &format!(
            "tallyd_http_connections_rejected_total{{server=\"{server}\",reason=\"{reason}\"}}"
        ),
    )
    .unwrap_or(-1.0)
}

fn timed_out(text: &str, server: &str, reason: &str) -> f64 {
    value(
        text,
        &format!(
            "tallyd_http_connections_timed_out_total{{server=\"{server}\",reason=\"{reason}\"}}"
        ),
    )
    .unwrap_or(-1.0)
}

#[test]
fn slowloris_from_one_peer_does_not_starve_health_or_statsd() {
    let t = Tallyd::start(
        "[http]\nmax_connections = 64\nmax_connections_per_peer = 8\nheader_read_timeout = \"2s\"\n\
         [otlp]\nmax_connections = 4\nmax_connections_per_peer = 4\nheader_read_timeout = \"1s\"\n",
    );
    // 80 connections from 127.0.0.2 (more than max_connections), each with half a request
    // head; 4 from 127.0.0.3 that send nothing. Without the per-peer cap the first 64 would
    // take every slot and /health/live would be refused.
    let mut slow: Vec<TcpStream> = (0..80)
        .map(|_| {
            let mut s = connect_from(t.http, 2);
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            s
        })
        .collect();
    let mut silent: Vec<TcpStream> = (0..4).map(|_| connect_from(t.http, 3)).collect();
    t.wait_metrics(
        |m| rejected(m, "http", "max_connections_per_peer") == 72.0,
        "72 of 127.0.0.2's connections refused at the per-peer cap",
    );
    // The rest of the listener is free for others: liveness and StatsD answer meanwhile.
    let (status, body) = t.get("/health/live");
    assert_eq!(status, 200, "{body}");
    t.send_tcp("slowloris.ok:1|c\n");
    t.wait_value("slowloris_ok_total", 1.0);
    let text = t.metrics();
    assert_eq!(rejected(&text, "http", "max_connections"), 0.0, "{text}");

    // The held ones are closed after the header timeout, and counted by what they did.
    for s in slow.iter_mut().chain(silent.iter_mut()) {
        assert!(closed_by_server(s), "a slow connection stays open");
    }
    t.wait_metrics(
        |m| timed_out(m, "http", "header_read") == 8.0 && timed_out(m, "http", "idle") == 4.0,
        "8 slow heads and 4 silent connections closed by header_read_timeout",
    );

    // The global cap: the fifth connection to OTLP/HTTP is closed at once, and counted.
    let otlp = t.otlp_http.expect("otlp http");
    let held: Vec<TcpStream> = (0..4).map(|i| connect_from(otlp, 4 + i)).collect();
    t.wait_metrics(
        |m| value(m, "tallyd_http_connections_active{server=\"otlp_http\"}") == Some(4.0),
        "4 OTLP/HTTP connections open",
    );
    let mut fifth = connect_from(otlp, 9);
    assert!(closed_by_server(&mut fifth));
    t.wait_metrics(
        |m| rejected(m, "otlp_http", "max_connections") == 1.0,
        "the fifth OTLP connection counted",
    );
    drop(held);

    // gRPC has no header timer: a plain connection that sends no preface is closed after
    // otlp.header_read_timeout before tonic sees it.
    let mut silent_grpc = connect_from(t.otlp_grpc.expect("otlp grpc"), 10);
    assert!(closed_by_server(&mut silent_grpc));
    t.wait_metrics(
        |m| timed_out(m, "otlp_grpc", "idle") == 1.0,
        "the silent gRPC connection counted",
    );
}

/// A tallyd started with a given `RLIMIT_NOFILE` (soft, hard), which the harness cannot set.
struct Limited {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Limited {
    fn start(config: &str, soft: u64, hard: u64) -> Limited {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tallyd.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd: Command = common::command();
        cmd.arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only calls setrlimit,
        // which is async-signal-safe, on a local value.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("start tallyd");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("logs").push(line);
            }
        });
        let l = Limited {
            child,
            logs,
            _dir: dir,
        };
        wait_for("tallyd started", 30, || {
            l.lines().iter().any(|x| x.contains("tallyd started"))
        });
        l
    }

    fn lines(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    fn addr(&self, component: &str) -> SocketAddr {
        self.lines()
            .iter()
            .find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                let f = v.get("fields")?;
                (f.get("component")?.as_str()? == component)
                    .then(|| f.get("addr")?.as_str()?.parse().ok())
                    .flatten()
            })
            .unwrap_or_else(|| panic!("{component} address in the logs"))
    }
}

fn nmea(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n").into_bytes()
}

#[test]
fn a_low_descriptor_limit_is_reported_and_idle_http_connections_do_not_exhaust_it() {
    raise_own_limit();
    // Soft 512, hard 1024: tallyd raises to 1024, and the default caps (1024 + 10000 + 256
    // + 2 x 1024) do not fit in it.
    let t = Limited::start(BASE_CONFIG, 512, 1024);
    let http = t.addr("http");
    let metrics = || http_request(http, "GET", "/metrics", &[], "").1;
    let m = metrics();
    assert_eq!(value(&m, "tallyd_process_max_fds"), Some(1024.0), "{m}");
    let (status, body) = http_request(http, "GET", "/health", &[], "");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    let fd = &health["components"]["fd_limit"];
    assert_eq!(fd["status"], "degraded", "{body}");
    let detail = fd["detail"].as_str().expect("detail");
    for part in [
        "RLIMIT_NOFILE 1024",
        "statsd.tcp_max_connections = 1024",
        "gps.max_connections = 10000",
        "http.max_connections = 256",
        "lowered to",
    ] {
        assert!(detail.contains(part), "{part:?} not in {detail}");
    }

    // 1,100 idle connections to the HTTP port from one peer.
    let idle: Vec<TcpStream> = (0..1100).map(|_| connect_from(http, 2)).collect();
    // The HTTP cap was lowered from 256 to 153 and its per-peer cap in proportion, from 32 to
    // 19: 19 held, the rest closed at once.
    let mut m = String::new();
    wait_for("every idle connection handled", 30, || {
        m = metrics();
        rejected(&m, "http", "max_connections_per_peer") == 1081.0
    });
    assert_eq!(rejected(&m, "http", "max_connections"), 0.0, "{m}");
    let open = value(&m, "tallyd_process_open_fds").expect("open fds");
    assert!(open < 1024.0 - 64.0, "{open} descriptors open of 1024");
    println!("with 1,100 idle HTTP connections: {open} descriptors open of 1024");

    // Every other listener still accepts and works.
    let tcp = t.addr("statsd_tcp");
    TcpStream::connect(tcp)
        .and_then(|mut s| s.write_all(b"fdlimit.ok:1|c\n"))
        .expect("statsd TCP accepts");
    let gps = t.addr("gps");
    let mut g = TcpStream::connect(gps).expect("GPS accepts");
    g.write_all(&nmea(
        "GPRMC,080000.00,A,4916.4500,N,12311.1200,W,5.0,054.7,010324,,,A",
    ))
    .expect("nmea");
    let otlp = t.addr("otlp_http");
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"fdlimit_otlp","gauge":{"dataPoints":[{"asDouble":3}]}}]}]}]}"#;
    let (status, body) = http_request(
        otlp,
        "POST",
        "/v1/metrics",
        &[("Content-Type", "application/json")],
        json,
    );
    assert_eq!(status, 200, "{body}");
    wait_for("StatsD, GPS and OTLP data in /metrics", 15, || {
        let m = metrics();
        value(&m, "fdlimit_ok_total") == Some(1.0)
            && value(&m, "fdlimit_otlp") == Some(3.0)
            && value(&m, "gps_tcp_messages_received_total{protocol=\"nmea\"}") == Some(1.0)
    });
    let emfile = t
        .lines()
        .into_iter()
        .filter(|l| l.contains("Too many open files"))
        .collect::<Vec<_>>();
    assert!(emfile.is_empty(), "{emfile:#?}");

    // SIGTERM with the idle connections still held: the drain does not wait on them.
    let pid = libc::pid_t::try_from(t.child.id()).expect("pid");
    // SAFETY: kill only sends a signal to the child this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut t = t;
    let mut status = None;
    wait_for("tallyd to exit after SIGTERM", 20, || {
        status = t.child.try_wait().expect("wait");
        status.is_some()
    });
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    drop(idle);
}

/// A self-signed certificate for 127.0.0.1 and localhost, made by the openssl CLI.
fn self_signed(dir: &Path) -> (String, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

/// curl with `ca` as the only trusted CA; returns (HTTP status, body).
fn curl(ca: &str, args: &[&str], url: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            ca,
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = out.stdout;
    let cut = text.iter().rposition(|&b| b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&text[cut + 1..])
        .trim()
        .parse()
        .expect("status");
    (status, text[..cut].to_vec())
}

#[test]
fn tls_on_the_http_api_and_both_otlp_receivers() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path());
    let t = Tallyd::start(&format!(
        "[http]\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n\
         [otlp]\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}\n"
    ));
    let https = |path: &str| format!("https://127.0.0.1:{}{path}", t.http.port());
    let (status, body) = curl(&cert, &[], &https("/health"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let health: serde_json::Value = serde_json::from_slice(&body).expect("health JSON");
    assert_eq!(health["components"]["http"]["status"], "ok");

    // OTLP/HTTP over TLS.
    let otlp = t.otlp_http.expect("otlp http");
    let json = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"tls_http","gauge":{"dataPoints":[{"asDouble":5}]}}]}]}]}"#;
    let (status, body) = curl(
        &cert,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            json,
        ],
        &format!("https://127.0.0.1:{}/v1/metrics", otlp.port()),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // OTLP/gRPC over TLS (HTTP/2 by ALPN): one length-prefixed ExportMetricsServiceRequest.
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use prost::Message;
    let req: ExportMetricsServiceRequest = serde_json::from_str(
        r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"tls_grpc","gauge":{"dataPoints":[{"asDouble":7}]}}]}]}]}"#,
    )
    .expect("request");
    let msg = req.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let frame_file = certs.path().join("frame.bin");
    std::fs::write(&frame_file, &frame).expect("frame");
    let headers_file = certs.path().join("headers.txt");
    let grpc = t.otlp_grpc.expect("otlp grpc");
    let (status, _) = curl(
        &cert,
        &[
            "--http2",
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-D",
            &headers_file.display().to_string(),
            "--data-binary",
            &format!("@{}", frame_file.display()),
        ],
        &format!(
            "https://127.0.0.1:{}/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            grpc.port()
        ),
    );
    assert_eq!(status, 200);
    let head = std::fs::read_to_string(&headers_file).expect("headers");
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("grpc-status: 0"),
        "{head}"
    );

    let scrape = || String::from_utf8(curl(&cert, &[], &https("/metrics")).1).expect("utf-8");
    wait_for("both OTLP points in /metrics over TLS", 15, || {
        let m = scrape();
        value(&m, "tls_http") == Some(5.0) && value(&m, "tls_grpc") == Some(7.0)
    });

    // A plain-text client on a TLS port gets no HTTP answer, and is counted.
    for addr in [t.http, otlp] {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(
            !got.starts_with(b"HTTP/"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    wait_for("the plain-text clients counted", 15, || {
        let m = scrape();
        rejected(&m, "http", "tls_handshake") == 1.0
            && rejected(&m, "otlp_http", "tls_handshake") == 1.0
    });
}

#[test]
fn check_config_refuses_half_a_tls_pair_and_a_key_that_is_no_key() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, _key) = self_signed(certs.path());
    let run = |extra: &str| {
        let path = certs.path().join("t.toml");
        std::fs::write(&path, extra).expect("config");
        let out = common::command()
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&format!("[http]\ntls_cert_file = {cert:?}\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("http.tls_key_file"), "{err}");
    // The certificate given as its own key.
    let (code, err) = run(&format!(
        "[otlp]\ntls_cert_file = {cert:?}\ntls_key_file = {cert:?}\n"
    ));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("otlp.tls_cert_file") && err.contains("private key"),
        "{err}"
    );
}
