//! Credentials never leave tallyd: every secret is configured with a distinctive value, and
//! none of them, nor the `Authorization: Basic` form of a user and password, nor even the
//! common marker prefix, may appear in `print-config`, `check-config` output (good and bad
//! configs, bad environment values), the log (trace level, while deliveries are refused or
//! answered 4xx/5xx by local receivers, and through the shutdown drain) or any API answer.
//! (Running, tallyd writes nothing to stdout; only `print-config` and `check-config` do.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::common::{closed_port, command, http_bytes, http_request, merge, Tallyd, BASE_CONFIG};

/// Every secret value configured below; none may be shown anywhere.
const SECRETS: &[&str] = &[
    "s3cr3t-api-key",
    "s3cr3t-admin-token",
    "s3cr3t-bearer-token",
    "s3cr3t-basic-pass",
    "s3cr3t-rw-url-pass",
    "s3cr3t-rw-header",
    "s3cr3t-dd-url-pass",
    "s3cr3t-gps-url-pass",
    "s3cr3t-gps-header",
    "s3cr3t-slack-path",
    "s3cr3t-slack-header",
    "s3cr3t-routing-key",
    "s3cr3t-hook-pass",
    "s3cr3t-hook-header",
    "s3cr3t-otlp-url-pass",
    "s3cr3t-otlp-header",
    "s3cr3t-env-header",
];

/// What every secret starts with: a part of one shown is a leak too.
const PREFIX: &str = "s3cr3t";

/// The users and passwords tallyd sends as `Authorization: Basic` (configured, or taken from a
/// URL's userinfo).
const BASIC: &[(&str, &str)] = &[
    ("rwuser", "s3cr3t-basic-pass"),
    ("rwuser", "s3cr3t-rw-url-pass"),
    ("dduser", "s3cr3t-dd-url-pass"),
    ("gpsuser", "s3cr3t-gps-url-pass"),
    ("hookuser", "s3cr3t-hook-pass"),
    ("otlpuser", "s3cr3t-otlp-url-pass"),
];

/// A loopback port nothing listens on.
pub(crate) fn closed() -> u16 {
    // Kept bound (never listening) until the test binary exits, so no one else takes the port.
    let c = closed_port();
    let port = c.port;
    std::mem::forget(c);
    port
}

/// An HTTP endpoint answering every request with one status (a delivery target that fails),
/// counting the requests.
struct Failing {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

impl Failing {
    fn start(status: u16) -> Failing {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&hits);
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let count = Arc::clone(&count);
                std::thread::spawn(move || {
                    if answer(s, status).is_ok() {
                        count.fetch_add(1, Relaxed);
                    }
                });
            }
        });
        Failing { addr, hits }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Relaxed)
    }
}

fn answer(s: TcpStream, status: u16) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let text = "{\"error\":\"refused by the test receiver\"}";
    let mut s = s;
    write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    s.flush()
}

/// The delivery targets of a running test: each answers its one status.
struct Targets {
    datadog: Failing,
    remote_write: Failing,
    gps: Failing,
    slack: Failing,
    pagerduty: Failing,
}

impl Targets {
    fn start() -> Targets {
        Targets {
            // 403 from the validation endpoint and the intake: the key is bad.
            datadog: Failing::start(403),
            remote_write: Failing::start(500),
            gps: Failing::start(401),
            slack: Failing::start(500),
            pagerduty: Failing::start(400),
        }
    }
}

/// Every secret set, with remote write authenticating by basic auth (`bearer = false`) or by a
/// bearer token (the two may not both be set). Without `targets`, every endpoint is a closed
/// port; with them, each answers an error. The webhook always refuses (closed port).
fn secret_config(bearer: bool, targets: Option<&Targets>) -> String {
    let port = |f: fn(&Targets) -> &Failing| targets.map_or_else(closed, |t| f(t).addr.port());
    let (rw, dd, gps, slack, pd, hook) = (
        port(|t| &t.remote_write),
        port(|t| &t.datadog),
        port(|t| &t.gps),
        port(|t| &t.slack),
        port(|t| &t.pagerduty),
        closed(),
    );
    let auth = if bearer {
        "bearer_token = \"s3cr3t-bearer-token\"".to_string()
    } else {
        "basic_auth_user = \"rwuser\"\nbasic_auth_password = \"s3cr3t-basic-pass\"".to_string()
    };
    format!(
        r#"
[log]
level = "trace"
[http]
admin_token = "s3cr3t-admin-token"
[datadog]
api_key = "s3cr3t-api-key"
url = "http://dduser:s3cr3t-dd-url-pass@127.0.0.1:{dd}"
[remote_write]
url = "http://rwuser:s3cr3t-rw-url-pass@127.0.0.1:{rw}/api/v1/write"
headers = {{ X-Scope-OrgID = "s3cr3t-rw-header" }}
{auth}
[gps]
points_url = "http://gpsuser:s3cr3t-gps-url-pass@127.0.0.1:{gps}/points"
points_headers = {{ Authorization = "Bearer s3cr3t-gps-header" }}
[otlp_export]
enabled = true
endpoint = "http://otlpuser:s3cr3t-otlp-url-pass@127.0.0.1:{rw}"
headers = {{ api-key = "s3cr3t-otlp-header" }}
[queue]
directory = "@DIR@/queue"
backoff_initial = "50ms"
backoff_max = "100ms"
[alerts]
default_rules = false
retry_initial = "50ms"
retry_max = "100ms"
max_attempts = 2
[[alerts.rules]]
name = "Hot"
metric = "temp"
warn = 50.0
[alerts.notifiers.chat]
type = "slack"
url = "http://127.0.0.1:{slack}/services/T000/B000/s3cr3t-slack-path"
headers = {{ Authorization = "s3cr3t-slack-header" }}
[alerts.notifiers.pager]
type = "pagerduty"
url = "http://127.0.0.1:{pd}/v2/enqueue"
routing_key = "s3cr3t-routing-key"
[alerts.notifiers.hook]
type = "webhook"
url = "http://hookuser:s3cr3t-hook-pass@127.0.0.1:{hook}/hook"
headers = {{ Authorization = "Bearer s3cr3t-hook-header" }}
"#
    )
}

/// Panics naming every secret (or form of one) found in `text` (`what` says where it was).
fn assert_no_secret(what: &str, text: &str) {
    let mut found: Vec<String> = SECRETS
        .iter()
        .filter(|s| text.contains(*s))
        .map(|s| s.to_string())
        .collect();
    for (user, pass) in BASIC {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        if text.contains(&b64) {
            found.push(format!("Basic {b64} ({user}:{pass})"));
        }
    }
    if found.is_empty() && text.contains(PREFIX) {
        found.push(format!("a part of a secret ({PREFIX}...)"));
    }
    assert!(found.is_empty(), "{what} shows {found:?}:\n{text}");
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let text = text.replace("@DIR@", &dir.path().display().to_string());
    let p = dir.path().join("t.toml");
    std::fs::write(&p, text).expect("write");
    p
}

/// Runs `tallyd <args> --config <p>` with `env`: (exit code, stdout + stderr).
fn run(args: &[&str], p: &std::path::Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = command();
    c.args(args).arg("--config").arg(p).env("RUST_LOG", "trace");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn print_config_shows_secrets_redacted() {
    for bearer in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write_config(&dir, &merge(BASE_CONFIG, &secret_config(bearer, None)));
        let out = command()
            .arg("print-config")
            .arg("--config")
            .arg(&p)
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        assert_no_secret("print-config", &format!("{stdout}\n{stderr}"));
        // Still TOML, every secret key present, shown as the marker.
        let v: toml::Table = toml::from_str(&stdout).expect("print-config output is TOML");
        let r = "<redacted>";
        assert_eq!(v["datadog"]["api_key"].as_str(), Some(r));
        assert_eq!(v["http"]["admin_token"].as_str(), Some(r));
        assert_eq!(
            v["remote_write"]["headers"]["X-Scope-OrgID"].as_str(),
            Some(r)
        );
        if bearer {
            assert_eq!(v["remote_write"]["bearer_token"].as_str(), Some(r));
        } else {
            assert_eq!(v["remote_write"]["basic_auth_password"].as_str(), Some(r));
            assert_eq!(
                v["remote_write"]["basic_auth_user"].as_str(),
                Some("rwuser")
            );
        }
        let rw_url = v["remote_write"]["url"].as_str().expect("url");
        assert!(
            rw_url.starts_with("http://rwuser:") && rw_url.ends_with("/api/v1/write"),
            "{rw_url}"
        );
        let n = &v["alerts"]["notifiers"];
        assert_eq!(n["pager"]["routing_key"].as_str(), Some(r));
        assert_eq!(
            n["chat"]["url"].as_str(),
            Some(r),
            "a Slack URL is a secret"
        );
        assert_eq!(n["chat"]["headers"]["Authorization"].as_str(), Some(r));
        assert_eq!(n["hook"]["headers"]["Authorization"].as_str(), Some(r));
        assert_eq!(
            v["gps"]["points_headers"]["Authorization"].as_str(),
            Some(r)
        );

        // The same credentials from the environment: redacted too.
        let (code, text) = run(
            &["print-config"],
            &p,
            &[
                ("DD_API_KEY", "s3cr3t-api-key"),
                ("TALLYD_HTTP__ADMIN_TOKEN", "s3cr3t-admin-token"),
            ],
        );
        assert_eq!(code, Some(0), "{text}");
        assert_no_secret("print-config with secrets in the environment", &text);

        // check-config of the whole secret config, good and with one bad (non-secret) value.
        let (code, text) = run(&["check-config"], &p, &[]);
        assert_eq!(code, Some(0), "{text}");
        assert_no_secret("check-config", &text);
        let bad = merge(
            BASE_CONFIG,
            &format!(
                "{}\n[aggregate]\nflush_interval = \"0s\"\n",
                secret_config(bearer, None)
            ),
        );
        let p = write_config(&dir, &bad);
        let (code, text) = run(&["check-config"], &p, &[]);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("aggregate.flush_interval"), "{text}");
        assert_no_secret("check-config of a bad config", &text);
    }
}

#[test]
fn config_errors_do_not_echo_secrets() {
    // (variable, value, what the error must name)
    let cases: &[(&str, &str, &str)] = &[
        // Not TOML at all.
        (
            "TALLYD_REMOTE_WRITE__HEADERS",
            "{ Authorization = \"Bearer s3cr3t-env-header",
            "TALLYD_REMOTE_WRITE__HEADERS",
        ),
        // TOML, but not a table of headers.
        (
            "TALLYD_REMOTE_WRITE__HEADERS",
            "\"Authorization: Bearer s3cr3t-env-header\"",
            "TALLYD_REMOTE_WRITE__HEADERS",
        ),
        (
            "TALLYD_GPS__POINTS_HEADERS",
            "\"s3cr3t-env-header\"",
            "TALLYD_GPS__POINTS_HEADERS",
        ),
        // A value that is not allowed in a header.
        (
            "TALLYD_REMOTE_WRITE__HEADERS",
            "{ Authorization = \"Bearer s3cr3t-env-header\\n\" }",
            "remote_write.headers",
        ),
        (
            "TALLYD_REMOTE_WRITE__BEARER_TOKEN",
            "s3cr3t-env-header\n",
            "remote_write.bearer_token",
        ),
        (
            "TALLYD_REMOTE_WRITE__URL",
            "ftp://u:s3cr3t-env-header@host/x",
            "remote_write.url",
        ),
        (
            "TALLYD_GPS__POINTS_URL",
            "ftp://u:s3cr3t-env-header@host/x",
            "gps.points_url",
        ),
        ("DD_DD_URL", "ftp://u:s3cr3t-env-header@host", "datadog.url"),
    ];
    for (var, value, names) in cases {
        let out = command()
            .arg("check-config")
            .env(var, value)
            .env("RUST_LOG", "trace")
            .output()
            .expect("run");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{var}={value:?}: {text}");
        assert!(
            text.contains(names),
            "{var}={value:?} names {names}: {text}"
        );
        assert_no_secret(&format!("check-config with {var}={value:?}"), &text);
    }

    // The same checks on file settings: notifier and GPS header values, notifier URLs.
    let files: &[(&str, &str)] = &[
        (
            "[alerts.notifiers.x]\ntype = \"webhook\"\nurl = \"http://h/\"\nheaders = { Authorization = \"s3cr3t-env-header\\n\" }\n",
            "alerts.notifiers.x.headers",
        ),
        (
            "[alerts.notifiers.x]\ntype = \"slack\"\nurl = \"hooks.slack.com/services/T/B/s3cr3t-env-header\"\n",
            "alerts.notifiers.x.url",
        ),
        (
            "[gps]\npoints_url = \"http://127.0.0.1:1/p\"\npoints_headers = { Authorization = \"s3cr3t-env-header\\r\" }\n",
            "gps.points_headers",
        ),
        (
            "[remote_write]\nurl = \"http://127.0.0.1:1/w\"\nbearer_token = \"s3cr3t-env-header\\u0001\"\n",
            "remote_write.bearer_token",
        ),
        (
            // A file error shows where, never the line itself.
            "[http]\nadmin_token = 5 # s3cr3t-env-header\n",
            "http.admin_token",
        ),
    ];
    for (text, names) in files {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write_config(&dir, text);
        let (code, all) = run(&["check-config"], &p, &[]);
        assert_eq!(code, Some(1), "{text}: {all}");
        assert!(all.contains(names), "{text} names {names}: {all}");
        assert_no_secret(&format!("check-config of {text:?}"), &all);
    }
}

/// Every API answer tallyd gives, from loopback: (what, body).
fn every_answer(t: &Tallyd) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let gets = [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/api/alerts",
        "/admin/queue/stats",
        "/admin/queue/health",
        "/api/monitoring/metrics/devices",
        "/api/monitoring/metrics/live?window_minutes=5",
        "/api/monitoring/metrics/live?window_minutes=0",
        "/api/monitoring/gps/blacklist",
        "/no/such/route",
    ];
    for path in gets {
        let (status, body) = t.get(path);
        assert_ne!(status, 0, "{path}");
        out.push((format!("GET {path}"), body));
    }
    let om = [("Accept", "application/openmetrics-text; version=1.0.0")];
    let (status, _, body) = http_bytes(t.http, "GET", "/metrics", &om, b"");
    assert_eq!(status, 200);
    out.push((
        "GET /metrics (OpenMetrics)".into(),
        String::from_utf8_lossy(&body).to_string(),
    ));
    let mut posts = vec!["/api/monitoring/alert/test?alert_type=critical".to_string()];
    for q in ["datadog", "remote_write", "live_points"] {
        posts.push(format!("/admin/queue/process-dlq/{q}?dry_run=true"));
        posts.push(format!("/admin/queue/force-process/{q}?batch_size=5"));
    }
    posts.push("/admin/queue/force-process/datadog?batch_size=0".into());
    for path in posts {
        let (status, body) = http_request(t.http, "POST", &path, &[], "");
        assert_ne!(status, 0, "{path}");
        out.push((format!("POST {path}"), body));
    }
    // A wrong bearer from loopback is ignored (loopback passes), never echoed.
    let (_, body) = http_request(
        t.http,
        "GET",
        "/admin/queue/stats",
        &[("Authorization", "Bearer s3cr3t-admin-tokenX")],
        "",
    );
    out.push(("GET /admin/queue/stats with a bearer".into(), body));
    out
}

/// Waits (at most 20 s) for `what`.
fn wait(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn notifiers_failed(t: &Tallyd) -> bool {
    let m = t.metrics();
    let failed = |n: &str| {
        m.lines().any(|l| {
            l.starts_with("tallyd_alert_notifications_total{")
                && l.contains(&format!("notifier=\"{n}\""))
                && l.contains("result=\"failed\"")
                && !l.ends_with(" 0")
        })
    };
    ["chat", "pager", "hook"].iter().all(|n| failed(n))
}

fn nmea(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n").into_bytes()
}

/// Runs tallyd with every secret set, makes every delivery and notifier fail, reads every API
/// answer, stops it, and checks all of it.
fn never_shows_secrets(targets: Option<&Targets>, bearer: bool) {
    let mut t = Tallyd::start_raw(
        &merge(BASE_CONFIG, &secret_config(bearer, targets)),
        &[("RUST_LOG", "trace")],
    );
    // Fire the rule so that every notifier tries (and fails) to deliver; traffic for the
    // Datadog and remote write queues; a GPS fix for the points queue.
    t.send_udp("temp:80|g");
    t.send_udp("hits:1|c");
    let mut gps = TcpStream::connect(t.gps.expect("gps")).expect("gps");
    gps.write_all(&nmea(
        "GPRMC,120000,A,4916.4500,N,12311.1200,W,0,0,010324,,,A",
    ))
    .expect("rmc");
    wait("every notifier to fail", || notifiers_failed(&t));
    if let Some(tg) = targets {
        wait("the delivery targets to be tried and retried", || {
            tg.datadog.hits() >= 2
                && tg.remote_write.hits() >= 2
                && tg.gps.hits() >= 1
                && tg.slack.hits() >= 1
                && tg.pagerduty.hits() >= 1
        });
    } else {
        let failures = |q: &str| {
            let m = t.metrics();
            m.lines().any(|l| {
                l.starts_with("tallyd_forwarder_failures_total{")
                    && l.contains(&format!("queue=\"{q}\""))
                    && l.contains("class=\"connection\"")
                    && !l.ends_with(" 0")
            })
        };
        wait("refused deliveries", || {
            ["datadog", "remote_write", "live_points"]
                .iter()
                .all(|q| failures(q))
        });
    }
    let bodies = every_answer(&t);
    drop(gps);
    // The drain logs what is left; it must not show a secret either.
    t.terminate();
    wait("the last log line", || {
        t.logs()
            .iter()
            .any(|l| l.contains("\"message\":\"stopped\""))
    });
    for (what, body) in &bodies {
        assert_no_secret(what, body);
    }
    let test = bodies
        .iter()
        .find(|(w, _)| w.starts_with("POST /api/monitoring/alert/test"))
        .map(|(_, b)| b.as_str())
        .unwrap_or_default();
    assert!(test.contains("\"results\""), "{test}");
    let logs = t.logs().join("\n");
    assert!(
        logs.contains("alert notification failed"),
        "notifier failures are logged: {logs}"
    );
    assert!(
        logs.contains("rwuser:***@127.0.0.1"),
        "the remote write URL is logged redacted: {logs}"
    );
    assert!(
        logs.contains("\"level\":\"TRACE\""),
        "the log is at trace level"
    );
    assert_no_secret("the log", &logs);
}

#[test]
fn running_tallyd_never_shows_secrets_while_deliveries_are_refused() {
    never_shows_secrets(None, false);
}

#[test]
fn running_tallyd_never_shows_secrets_while_receivers_answer_errors() {
    let targets = Targets::start();
    never_shows_secrets(Some(&targets), false);
    let targets = Targets::start();
    never_shows_secrets(Some(&targets), true);
}
