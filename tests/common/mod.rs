//! Test harness: starts the real `tallyd` binary with every listener on loopback port 0 (the
//! bound addresses are read from its "listening" log lines) and talks to it over real sockets.
//! Every wait is bounded.

#![allow(dead_code)]

pub mod gps;
pub mod gt06;
pub mod intake;
pub mod remote_write;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Listener settings that bind everything to loopback port 0, flush every 200 ms.
pub const BASE_CONFIG: &str = r#"
[log]
level = "info"
format = "json"
[statsd]
udp_listen = "127.0.0.1:0"
tcp_listen = "127.0.0.1:0"
udp_receivers = 2
[aggregate]
flush_interval = "200ms"
[http]
listen = "127.0.0.1:0"
[gps]
listen = "127.0.0.1:0"
[otlp]
http_listen = "127.0.0.1:0"
grpc_listen = "127.0.0.1:0"
"#;

pub struct Tallyd {
    child: Option<Child>,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub gps: Option<SocketAddr>,
    pub http: SocketAddr,
    pub otlp_http: Option<SocketAddr>,
    pub otlp_grpc: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub logs: Arc<Mutex<Vec<String>>>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tallyd")
}

/// Prefixes of the environment variables tallyd reads (src/config/env.rs): its own, the
/// Datadog Agent's aliases and the alert health thresholds.
pub const ENV_PREFIXES: &[&str] = &["TALLYD_", "DD_", "ALERT_"];

/// A command for the binary with every variable tallyd reads removed, so the developer's
/// environment cannot change a test.
pub fn command() -> Command {
    let mut c = Command::new(bin());
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
            c.env_remove(&k);
        }
    }
    c
}

impl Tallyd {
    /// Starts tallyd with `BASE_CONFIG` followed by `extra` (later keys of a table must not
    /// repeat earlier ones; pass a whole config with [`Tallyd::start_raw`] to replace it).
    pub fn start(extra: &str) -> Tallyd {
        Self::start_raw(&merge(BASE_CONFIG, extra), &[])
    }

    pub fn start_raw(config: &str, env: &[(&str, &str)]) -> Tallyd {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config.replace("@DIR@", &dir.path().display().to_string());
        let path = dir.path().join("tallyd.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = command();
        cmd.arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start tallyd");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("logs").push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = logs.lock().expect("logs").clone();
            if lines.iter().any(|l| l.contains("tallyd started")) {
                let find = |component: &str| -> Option<SocketAddr> {
                    lines.iter().find_map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).ok()?;
                        let f = v.get("fields")?;
                        if f.get("component")?.as_str()? == component {
                            f.get("addr")?.as_str()?.parse().ok()
                        } else {
                            None
                        }
                    })
                };
                let http = find("http").expect("http address in logs");
                return Tallyd {
                    child: Some(child),
                    udp: find("statsd_udp"),
                    tcp: find("statsd_tcp"),
                    gps: find("gps"),
                    http,
                    otlp_http: find("otlp_http"),
                    otlp_grpc: find("otlp_grpc"),
                    dir,
                    logs,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tallyd exited early with {status}: {lines:#?}");
            }
            assert!(
                Instant::now() < deadline,
                "tallyd did not start: {lines:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process id of the running binary (the load bench reads /proc/<pid>/ with it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn send_udp(&self, data: &str) {
        let s = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
        s.send_to(data.as_bytes(), self.udp.expect("udp listener"))
            .expect("udp send");
    }

    pub fn send_tcp(&self, data: &str) {
        let mut s = TcpStream::connect(self.tcp.expect("tcp listener")).expect("tcp connect");
        s.write_all(data.as_bytes()).expect("tcp write");
    }

    /// GET `path`; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_request(self.http, "GET", path, &[], "")
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").1
    }

    /// Polls `/metrics` until `series` (the exact text before the value, e.g.
    /// `foo_total{a="b"}`) has `want`, or panics after 10 s with the last scrape.
    pub fn wait_value(&self, series: &str, want: f64) -> String {
        self.wait_metrics(
            |text| value(text, series) == Some(want),
            &format!("{series} == {want}"),
        )
    }

    pub fn wait_metrics(&self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics();
            if pred(&text) {
                return text;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last scrape:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits (at most 20 s) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill only sends a signal to the child we started; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tallyd did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL (no drain, no final flush) and waits for it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// POST `path` with an empty body; returns (status, body).
    pub fn post(&self, path: &str) -> (u16, String) {
        http_request(self.http, "POST", path, &[], "")
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }
}

impl Drop for Tallyd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Appends `extra` to `base`, merging keys into tables that `base` already opens.
pub fn merge(base: &str, extra: &str) -> String {
    let mut table: toml::Table = toml::from_str(base).expect("base toml");
    let extra: toml::Table = toml::from_str(extra).expect("extra toml");
    for (k, v) in extra {
        match (table.get_mut(&k), v) {
            (Some(toml::Value::Table(t)), toml::Value::Table(e)) => t.extend(e),
            (_, v) => {
                table.insert(k, v);
            }
        }
    }
    toml::to_string(&table).expect("render toml")
}

/// The value of the sample whose text before the value is exactly `series`.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok()).flatten()
    })
}

/// A minimal HTTP/1.1 client over a real socket: one request, `Connection: close`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("http connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("http write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("http read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("\r\ntransfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// The body of a `Transfer-Encoding: chunked` response, as a client would see it; panics on a
/// malformed or unterminated one.
pub fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = after[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after chunk");
    }
}

/// Response headers of a GET, lower-cased names.
pub fn http_headers(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut s = TcpStream::connect(addr).expect("http connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("http write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("http read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// One HTTP/1.1 request with a binary body; returns (status, lower-cased headers, body).
pub fn http_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("http connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut raw_req = req.into_bytes();
    raw_req.extend_from_slice(body);
    // A server may answer (413) and close before reading a large body; that is fine.
    let _ = s.write_all(&raw_req);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body)
}

/// A real third-party server (Prometheus, Alertmanager) run by a test on loopback port 0,
/// killed when dropped.
pub struct External {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Its standard error, line by line.
    pub logs: Arc<Mutex<Vec<String>>>,
}

/// `s` percent-encoded for a URL query (RFC 3986 unreserved characters kept).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl External {
    /// A Prometheus instant query's vector: (labels, value) per series.
    pub fn query(&self, q: &str) -> Vec<(HashMap<String, String>, String)> {
        let path = format!("/api/v1/query?query={}", percent_encode(q));
        let (code, body) = http_request(self.addr, "GET", &path, &[], "");
        assert_eq!(code, 200, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("query json");
        v["data"]["result"]
            .as_array()
            .expect("vector result")
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .expect("metric")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                (
                    labels,
                    r["value"][1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a Prometheus exporter-toolkit log line `msg="Listening on" address=HOST:PORT`
/// (Prometheus and Alertmanager log the address they bound, port 0 resolved).
fn listening_on(line: &str) -> Option<SocketAddr> {
    if !line.contains("msg=\"Listening on\"") {
        return None;
    }
    let rest = &line[line.find(" address=")? + " address=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Starts `bin` with `args(dir, listen)` (a fresh temporary directory and `127.0.0.1:0`, which
/// the server binds), reads the bound address from its log, and waits, at most `ready_secs`,
/// until `GET /-/ready` answers 200.
pub fn start_external(
    what: &str,
    bin: &str,
    ready_secs: u64,
    args: impl FnOnce(&std::path::Path, SocketAddr) -> Vec<String>,
) -> External {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut child = Command::new(bin)
        .args(args(dir.path(), listen))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({bin}): {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logs);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().expect("logs").push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(ready_secs);
    let mut ext = External {
        child,
        addr: listen,
        dir,
        logs,
    };
    loop {
        let bound = ext
            .logs
            .lock()
            .expect("logs")
            .iter()
            .find_map(|l| listening_on(l));
        if let Some(addr) = bound {
            ext.addr = addr;
            if http_request(addr, "GET", "/-/ready", &[], "").0 == 200 {
                return ext;
            }
        }
        if let Ok(Some(status)) = ext.child.try_wait() {
            panic!("{what} exited early with {status}: {:#?}", ext.logs.lock());
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not become ready (bound {bound:?}): {:#?}",
            ext.logs.lock()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A loopback TCP port that refuses connections for as long as this value lives: a socket
/// bound to port 0 that never listens holds the port (nothing else can bind it), so a
/// connection to it is refused rather than reaching some other server.
pub struct ClosedPort {
    _socket: socket2::Socket,
    pub port: u16,
}

pub fn closed_port() -> ClosedPort {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&any.into()).expect("bind");
    let port = socket
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet")
        .port();
    ClosedPort {
        _socket: socket,
        port,
    }
}

/// A system tool the end-to-end tests run for real: `$env` when set, else the first of `names`
/// found on `PATH` or in /usr/bin; panics with how to install `package` otherwise.
pub fn system_tool(env: &str, names: &[&str], package: &str) -> String {
    if let Ok(b) = std::env::var(env) {
        return b;
    }
    let path = std::env::var("PATH").unwrap_or_default();
    for name in names {
        for dir in path.split(':').chain(["/usr/bin"]) {
            let p = std::path::Path::new(dir).join(name);
            if p.is_file() {
                return p.display().to_string();
            }
        }
    }
    panic!(
        "{} was not found: install it with `apt-get update && apt-get install -y {package}` \
         (tests/run.sh does this), or set {env} to its path",
        names.join(" or ")
    );
}
