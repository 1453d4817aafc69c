//! The security pass of issue 20, against the real binary:
//!
//! - the admin rule seen from another host: the test makes a network namespace and a veth pair
//!   on a private /30 of its own, binds `http.listen` to the host side and runs `curl` inside
//!   the namespace, so every request comes from a non-loopback address (needs root and `ip`,
//!   as CI has; without them the test fails with instructions rather than skipping);
//! - plain-NMEA connection churn never evicts an identified GPS device;
//! - credentials never leave tallyd (`secrets` below): every secret set to a distinctive value
//!   appears in no `print-config` output, `check-config` error, log line (trace level, while
//!   deliveries fail or are refused) or API answer.

mod common;
#[path = "security_e2e/secrets.rs"]
mod secrets;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{merge, value, Tallyd, BASE_CONFIG};

// ---- a network namespace of the test's own ----

/// A network namespace joined to the host by a veth pair on a /30; removed when dropped, also
/// when the test panics.
struct Netns {
    name: String,
    host_if: String,
    /// The host side's address (tallyd binds it).
    host: Ipv4Addr,
    /// The namespace side's address (curl's source address).
    peer: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A number that differs between runs and between concurrent tests.
fn entropy() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 20)
}

/// Addresses on this host now (`ip -4 -o addr`), to pick a /30 nobody uses.
fn host_addresses() -> String {
    Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

impl Netns {
    /// A namespace named for `tag`; `slot` (0..=1, one per test) keeps the /30s of tests
    /// running at once apart.
    fn create(tag: &str, slot: u8) -> Netns {
        // SAFETY: geteuid only reads the process's effective user id.
        let root = unsafe { libc::geteuid() } == 0;
        let have_ip = Command::new("ip").arg("-V").output().is_ok();
        assert!(
            root && have_ip,
            "this test makes a network namespace: run it as root with iproute2 installed \
             (`apt-get install -y iproute2`; tests/run.sh does both in CI)"
        );
        let used = host_addresses();
        let mut seed = entropy();
        let (host, peer) = loop {
            let x = (seed % 256) as u8;
            let y = ((seed >> 8) % 32) as u8 * 8 + (slot % 2) * 4;
            let host = Ipv4Addr::new(10, 250, x, y + 1);
            let peer = Ipv4Addr::new(10, 250, x, y + 2);
            if !used.contains(&format!("inet {host}/")) && !used.contains(&format!("inet {peer}/"))
            {
                break (host, peer);
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        };
        let id = format!("{:05}{tag}", std::process::id() % 100_000);
        let ns = Netns {
            name: format!("tallyd-sec-{id}"),
            host_if: format!("tsh{id}"),
            host,
            peer,
        };
        let peer_if = format!("tsp{id}");
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{host}/30"), "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{peer}/30"), "dev", &peer_if]);
        inside(&["link", "set", &peer_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// `curl` run inside the namespace: (status, body); status 0 when no answer came.
    fn curl(&self, method: &str, url: &str, auth: Option<&str>) -> (u16, String) {
        let mut c = Command::new("ip");
        c.args([
            "netns", "exec", &self.name, "curl", "-s", "-m", "10", "-X", method,
        ]);
        c.args(["-w", "\n%{http_code}"]);
        if let Some(a) = auth {
            c.args(["-H", &format!("Authorization: {a}")]);
        }
        c.arg(url);
        let out = c.output().expect("run curl in the namespace");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys the veth end inside it, and with it the pair; the
        // host side is deleted too in case the pair never reached the namespace.
        for args in [
            vec!["netns", "del", self.name.as_str()],
            vec!["link", "del", self.host_if.as_str()],
        ] {
            let _ = Command::new("ip").args(&args).output();
        }
    }
}

/// The routes no peer may call without the token, whatever `http.public_routes` says.
const MUTATING: &[&str] = &[
    "/admin/queue/process-dlq/remote_write?dry_run=true",
    "/admin/queue/force-process/remote_write?batch_size=1",
    "/api/monitoring/alert/test?alert_type=info&message=netns",
];

/// The read-only views that are protected by default, with their route group.
const SENSITIVE: &[(&str, &str)] = &[
    ("/api/monitoring/metrics/devices", "gps"),
    ("/api/monitoring/metrics/live", "gps"),
    ("/api/monitoring/gps/blacklist", "gps"),
    ("/api/monitoring/gps/devices/x/commands", "gps"),
    ("/admin/queue/health", "queue"),
    ("/admin/queue/stats", "queue"),
    ("/api/alerts", "alerts"),
    ("/api/monitoring/dashboard", "dashboard"),
    ("/api/monitoring/history", "dashboard"),
    ("/api/monitoring/metrics/queues", "queue"),
];

/// Public by default.
const PUBLIC: &[(&str, &str)] = &[
    ("/health", "health"),
    ("/health/live", "health"),
    ("/health/ready", "health"),
    ("/metrics", "metrics"),
];

/// tallyd with its HTTP listener on the namespace's host side, a queue (remote write to a
/// closed port), alerting and GPS on, and `http_extra` in `[http]`.
fn start_on(ns: &Netns, http_extra: &str) -> Tallyd {
    let closed = secrets::closed();
    let cfg = merge(
        BASE_CONFIG,
        &format!(
            r#"
[http]
listen = "{}:0"
{http_extra}
[remote_write]
url = "http://127.0.0.1:{closed}/api/v1/write"
[queue]
directory = "@DIR@/queue"
[alerts]
default_rules = false
"#,
            ns.host
        ),
    );
    Tallyd::start_raw(&cfg, &[])
}

/// Waits until the namespace reaches tallyd (the veth link is up).
fn wait_reachable(ns: &Netns, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns.curl("GET", &format!("{base}/health/live"), None).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "tallyd on {base} is not reachable from the namespace"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_admin_rule_holds_for_a_peer_on_another_address() {
    let ns = Netns::create("a", 0);
    let token = format!("tok-{:x}", entropy());
    let mut t = start_on(&ns, &format!("admin_token = \"{token}\""));
    assert_eq!(t.http.ip(), std::net::IpAddr::V4(ns.host));
    let base = format!("http://{}", t.http);
    wait_reachable(&ns, &base);
    let bearer = format!("Bearer {token}");
    let wrong = format!("Bearer {token}x");
    let mut refused = 0;

    for (path, _) in PUBLIC {
        let (code, body) = ns.curl("GET", &format!("{base}{path}"), None);
        assert_eq!(code, 200, "GET {path} is public: {body}");
    }
    let protected = SENSITIVE
        .iter()
        .map(|(p, _)| ("GET", *p))
        .chain(MUTATING.iter().map(|p| ("POST", *p)));
    for (method, path) in protected {
        let url = format!("{base}{path}");
        for auth in [
            None,
            Some(wrong.as_str()),
            Some(token.as_str()),
            Some(&*format!("Basic {token}")),
            Some("Bearer "),
        ] {
            let (code, body) = ns.curl(method, &url, auth);
            assert_eq!(code, 401, "{method} {path} with {auth:?}: {body}");
            assert!(!body.contains(&token), "{body}");
            refused += 1;
        }
        // The token in the query string is no credential.
        let sep = if url.contains('?') { '&' } else { '?' };
        let (code, _) = ns.curl(method, &format!("{url}{sep}token={token}"), None);
        assert_eq!(code, 401, "{method} {path} with the token in the query");
        refused += 1;
        let (code, body) = ns.curl(method, &url, Some(&bearer));
        assert!(
            (200..300).contains(&code) || (path == "/admin/queue/health" && code == 503),
            "{method} {path} with the right token: {code} {body}"
        );
        assert!(body.starts_with('{'), "{method} {path}: {body}");
    }
    // Counted, by reason, and logged (without the token).
    let (_, m) = ns.curl("GET", &format!("{base}/metrics"), None);
    assert_eq!(
        value(
            &m,
            "tallyd_http_requests_denied_total{reason=\"bad_token\"}"
        ),
        Some(f64::from(refused))
    );
    assert_eq!(
        value(
            &m,
            "tallyd_http_requests_denied_total{reason=\"loopback_only\"}"
        ),
        Some(0.0)
    );
    let logs = t.logs().join("\n");
    assert!(
        logs.contains("refused a request to a protected route")
            && logs.contains(&ns.peer.to_string()),
        "a refusal is logged with the peer: {logs}"
    );
    assert!(!logs.contains(&token), "the log shows the token");
    t.terminate();
}

#[test]
fn without_a_token_protected_routes_are_loopback_only_and_public_routes_configurable() {
    let ns = Netns::create("b", 1);
    // Only the GPS views public: /health and /metrics are protected like the rest.
    let t = start_on(&ns, "public_routes = [\"gps\"]");
    let base = format!("http://{}", t.http);
    // /health/live is protected here, so reachability is seen as any HTTP answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns.curl("GET", &format!("{base}/health/live"), None).0 == 0 {
        assert!(Instant::now() < deadline, "{base} not reachable");
        std::thread::sleep(Duration::from_millis(50));
    }
    let gets = SENSITIVE.iter().chain(PUBLIC);
    for (path, group) in gets {
        let (code, body) = ns.curl("GET", &format!("{base}{path}"), None);
        let want = if *group == "gps" { 200 } else { 403 };
        assert_eq!(code, want, "GET {path} ({group}): {body}");
        // No token is configured: none is accepted either.
        let (code, _) = ns.curl("GET", &format!("{base}{path}"), Some("Bearer "));
        assert_eq!(code, want, "GET {path} with an empty bearer");
    }
    for path in MUTATING {
        let (code, body) = ns.curl("POST", &format!("{base}{path}"), None);
        assert_eq!(code, 403, "POST {path}: {body}");
    }
    // The status page is static and always served; the views it reads keep their rule.
    let (code, body) = ns.curl("GET", &format!("{base}/"), None);
    assert_eq!(code, 200, "GET /: {body}");
    assert!(body.contains("<title>tallyd status</title>"), "{body:.200}");
    // A group name that is not a read-only view is a config error, naming the key.
    let out = common::command()
        .arg("check-config")
        .env("TALLYD_HTTP__PUBLIC_ROUTES", "[\"health\", \"admin\"]")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("http.public_routes"), "{err}");
}

#[test]
fn loopback_is_not_trusted_when_told_so() {
    // A reverse proxy on the same host would make every caller loopback.
    let t = Tallyd::start("[http]\nadmin_token = \"tok-local\"\ntrust_loopback = false\n");
    let bearer = [("Authorization", "Bearer tok-local")];
    for (path, _) in SENSITIVE {
        assert_eq!(t.get(path).0, 401, "GET {path} from loopback");
        assert_eq!(
            common::http_request(t.http, "GET", path, &bearer, "").0,
            200,
            "GET {path} with the token"
        );
    }
    for path in MUTATING {
        assert_eq!(t.post(path).0, 401, "POST {path} from loopback");
    }
    for (path, _) in PUBLIC {
        assert_eq!(t.get(path).0, 200, "GET {path} stays public");
    }
    // Without a token nobody could call them: refused as a config error.
    let out = common::command()
        .arg("check-config")
        .env("TALLYD_HTTP__TRUST_LOOPBACK", "false")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("http.trust_loopback"), "{err}");
}

// ---- GPS: connection churn of plain NMEA ----

fn nmea(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n").into_bytes()
}

/// Reads from `s` until `end` arrives (at most 10 s).
fn read_until(s: &mut TcpStream, end: u8) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while out.last() != Some(&end) {
        s.read_exact(&mut b).expect("read reply");
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn plain_nmea_connection_churn_never_evicts_an_identified_device() {
    let t = Tallyd::start("[gps]\nmax_devices = 2\nmax_unidentified_devices = 4\n");
    let gps: SocketAddr = t.gps.expect("gps");
    // Two devices that named themselves, then went away: the first eviction candidates.
    let mut h02 = TcpStream::connect(gps).expect("connect");
    h02.write_all(
        b"*HQ,4970105243,V1,104000,A,2235.1770,N,11357.8913,E,000.27,235,130721,FFFFFBFF#\r\n",
    )
    .expect("h02");
    assert!(read_until(&mut h02, b'#').starts_with("*HQ,4970105243,V4,V1,"));
    let mut tk = TcpStream::connect(gps).expect("connect");
    tk.write_all(b"##,imei:359586015829802,A;").expect("tk103");
    assert_eq!(read_until(&mut tk, b'D'), "LOAD");
    drop((h02, tk));
    // Wait until both are listed as disconnected: evictable, had they shared a pool.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = t.get("/api/monitoring/metrics/devices");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let gone = v["devices"]
            .as_array()
            .is_some_and(|d| d.len() == 2 && d.iter().all(|d| d["connected"] == false));
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "devices still connected: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // One peer, many short plain-NMEA connections: each is a new `nmea:<ip>:<port>` device.
    let n = 40;
    for i in 0..n {
        let mut s = TcpStream::connect(gps).expect("connect");
        s.write_all(&nmea(&format!(
            "GPRMC,1200{:02},A,4916.4500,N,12311.1200,W,0,0,010324,,,A",
            i % 60
        )))
        .expect("rmc");
    }
    // Every connection handled: the two devices and the n NMEA ones closed after identifying.
    let closed = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("tallyd_gps_connections_closed_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let text = t.wait_metrics(
        |m| closed(m) == f64::from(n + 2),
        "every GPS connection to close",
    );
    let v = |s| value(&text, s).unwrap_or(0.0);
    assert_eq!(
        v("tallyd_gps_registry_unidentified_evicted_total")
            + v("tallyd_gps_registry_unidentified_refused_total"),
        f64::from(n - 4),
        "{text}"
    );
    assert_eq!(
        value(&text, "tallyd_gps_registry_devices{pool=\"unidentified\"}"),
        Some(4.0)
    );
    assert_eq!(
        value(&text, "tallyd_gps_registry_devices{pool=\"identified\"}"),
        Some(2.0)
    );
    assert_eq!(value(&text, "tallyd_gps_registry_evicted_total"), Some(0.0));
    assert_eq!(value(&text, "tallyd_gps_registry_refused_total"), Some(0.0));
    let (code, body) = t.get("/api/monitoring/metrics/devices");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    let devices = v["devices"].as_array().expect("devices");
    let named: Vec<&str> = devices
        .iter()
        .filter(|d| d["identified"] == true)
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(named, ["359586015829802", "4970105243"], "{body}");
    let anonymous = devices.iter().filter(|d| d["identified"] == false).count();
    assert_eq!(anonymous, 4, "{body}");
}

/// A TCP connection to `to` from 127.0.0.`host`.
fn connect_from(to: SocketAddr, host: u8) -> std::io::Result<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: SocketAddr = format!("127.0.0.{host}:0").parse().expect("addr");
    sock.bind(&from.into())?;
    sock.connect(&to.into())?;
    Ok(sock.into())
}

#[test]
fn a_blacklisted_gps_peer_fires_the_shipped_health_alert() {
    // The health rules watch tallyd_gps_blacklisted_ips and tallyd_gps_(invalid_)messages;
    // they were not rendered, so the rules never saw data.
    let t = Tallyd::start(
        "[gps]\nblacklist_connections = 3\n[alerts.health]\ngps_blacklisted_warn = 0.5\n",
    );
    let gps = t.gps.expect("gps");
    for _ in 0..6 {
        if let Ok(mut s) = connect_from(gps, 77) {
            let _ = s.write_all(b"garbage that is no tracker protocol\r\n");
        }
    }
    let text = t.wait_value("tallyd_gps_blacklisted_ips", 1.0);
    assert!(
        value(&text, "tallyd_gps_messages_total").is_some(),
        "{text}"
    );
    assert!(
        value(&text, "tallyd_gps_invalid_messages_total").is_some(),
        "{text}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = t.get("/api/alerts");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        if v["firing"].to_string().contains("TallydGpsBlacklistedIps") {
            break;
        }
        assert!(Instant::now() < deadline, "the alert did not fire: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
