//! Credentials never leave tallyd: every secret is configured with a distinctive value, and
//! none of them may appear in `print-config`, in `check-config` errors, in the log (at debug
//! level, while deliveries to closed ports fail and retry) or in any API answer.

mod common;

use std::time::{Duration, Instant};

use common::{closed_port, command, http_request, merge, ClosedPort, Tallyd, BASE_CONFIG};

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
    "s3cr3t-env-header",
];

/// Every secret set, with remote write authenticating by basic auth (`bearer = false`) or by a
/// bearer token (the two may not both be set). Every endpoint is a port that refuses
/// connections while the returned ports live.
fn secret_config(bearer: bool) -> (String, Vec<ClosedPort>) {
    let ports: Vec<ClosedPort> = (0..6).map(|_| closed_port()).collect();
    let [rw, dd, gps, slack, pd, hook] = [0, 1, 2, 3, 4, 5].map(|i| ports[i].port);
    let auth = if bearer {
        "bearer_token = \"s3cr3t-bearer-token\"".to_string()
    } else {
        "basic_auth_user = \"rwuser\"\nbasic_auth_password = \"s3cr3t-basic-pass\"".to_string()
    };
    let text = format!(
        r#"
[log]
level = "debug"
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
    );
    (text, ports)
}

/// Panics naming every secret found in `text` (`what` says where it was).
fn assert_no_secret(what: &str, text: &str) {
    let found: Vec<&str> = SECRETS
        .iter()
        .copied()
        .filter(|s| text.contains(s))
        .collect();
    assert!(found.is_empty(), "{what} shows {found:?}:\n{text}");
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let text = text.replace("@DIR@", &dir.path().display().to_string());
    let p = dir.path().join("t.toml");
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn print_config_shows_secrets_redacted() {
    for bearer in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let (config, _ports) = secret_config(bearer);
        let p = write_config(&dir, &merge(BASE_CONFIG, &config));
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
    ];
    for (text, names) in files {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write_config(&dir, text);
        let out = command()
            .arg("check-config")
            .arg("--config")
            .arg(&p)
            .output()
            .expect("run");
        let all = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{text}: {all}");
        assert!(all.contains(names), "{text} names {names}: {all}");
        assert_no_secret(&format!("check-config of {text:?}"), &all);
    }
}

#[test]
fn running_tallyd_never_shows_secrets() {
    let (config, _ports) = secret_config(false);
    let t = Tallyd::start_raw(&merge(BASE_CONFIG, &config), &[]);
    // Fire the rule so that every notifier tries (and fails) to deliver.
    t.send_udp("temp:80|g");
    t.send_udp("hits:1|c");
    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = t.metrics();
        let failed = |n: &str| {
            m.lines().any(|l| {
                l.starts_with("tallyd_alert_notifications_total{")
                    && l.contains(&format!("notifier=\"{n}\""))
                    && l.contains("result=\"failed\"")
                    && !l.ends_with(" 0")
            })
        };
        if ["chat", "pager", "hook"].iter().all(|n| failed(n)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the notifiers did not fail in time:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Deliveries to the closed remote write and Datadog endpoints have failed and been
    // retried, so their error paths have logged (GPS points are not sent here: no device).
    let retried = |m: &str, q: &str| {
        common::value(
            m,
            &format!("tallyd_forwarder_retries_total{{queue=\"{q}\"}}"),
        )
        .is_some_and(|n| n >= 1.0)
    };
    t.wait_metrics(
        |m| retried(m, "remote_write") && retried(m, "datadog"),
        "retries of remote write and Datadog deliveries",
    );
    for path in [
        "/health",
        "/health/ready",
        "/metrics",
        "/api/alerts",
        "/admin/queue/stats",
        "/admin/queue/health",
    ] {
        let (status, body) = t.get(path);
        assert_ne!(status, 0, "{path}");
        bodies.push((path.to_string(), body));
    }
    // The test notification answers with each notifier's error.
    let (status, body) = http_request(t.http, "POST", "/api/monitoring/alert/test", &[], "");
    assert_ne!(status, 0);
    assert!(body.contains("\"results\""), "{body}");
    bodies.push(("POST /api/monitoring/alert/test".into(), body));
    for (path, body) in &bodies {
        assert_no_secret(path, body);
    }
    let logs = t.logs().join("\n");
    assert!(
        logs.contains("alert notification failed"),
        "notifier failures are logged: {logs}"
    );
    assert!(
        logs.contains("rwuser:***@127.0.0.1"),
        "the remote write URL is logged redacted: {logs}"
    );
    assert_no_secret("the log", &logs);
}
