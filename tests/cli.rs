//! The command line from the user's side: check-config, print-config, --version, environment.

mod common;

use common::command;

fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("t.toml");
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn check_config_accepts_the_shipped_file() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tallyd.toml");
    let out = command()
        .args(["check-config", "--config", file])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config ok");
}

#[test]
fn check_config_accepts_the_platform_alerts_example() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/examples/platform-alerts.toml"
    );
    let out = command()
        .args(["check-config", "--config", file])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config ok");
}

#[test]
fn check_config_names_key_line_and_column() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = write(
        &dir,
        "[statsd]\nudp_listen = \"0.0.0.0:8125\"\n\n[aggregate]\nflush_intervall = \"10s\"\n",
    );
    let out = command()
        .arg("check-config")
        .arg("--config")
        .arg(&p)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flush_intervall"), "{err}");
    assert!(err.contains("line 5, column 1"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
}

#[test]
fn check_config_reports_bad_values_and_missing_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = write(&dir, "[http]\nlisten = \"localhost\"\n");
    let out = command()
        .arg("check-config")
        .arg("--config")
        .arg(&p)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.listen"));

    let out = command()
        .args(["check-config", "--config", "/nonexistent/tallyd.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tallyd.toml"));
}

#[test]
fn print_config_merges_defaults_file_and_environment() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = write(&dir, "[aggregate]\nflush_interval = \"30s\"\n");
    let out = command()
        .arg("print-config")
        .arg("--config")
        .arg(&p)
        .env("DD_DOGSTATSD_PORT", "9125")
        .env("DD_API_KEY", "abc")
        .env("TALLYD_PROMETHEUS__SERIES_TTL", "10m")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: toml::Table = toml::from_str(&text).expect("print-config output is TOML");
    assert_eq!(v["aggregate"]["flush_interval"].as_str(), Some("30s"));
    assert_eq!(v["statsd"]["udp_listen"].as_str(), Some("0.0.0.0:9125"));
    assert_eq!(v["statsd"]["tcp_listen"].as_str(), Some("0.0.0.0:9125"));
    // The key is a credential: print-config shows that it is set, not what it is.
    assert_eq!(v["datadog"]["api_key"].as_str(), Some("<redacted>"));
    assert!(!text.contains("abc"), "{text}");
    assert_eq!(v["prometheus"]["series_ttl"].as_str(), Some("10m"));
    assert_eq!(v["http"]["listen"].as_str(), Some("0.0.0.0:9090"));
}

#[test]
fn print_config_without_file_is_the_defaults() {
    let out = command().arg("print-config").output().expect("run");
    assert!(out.status.success());
    let printed: tallyd::config::Config =
        toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("parse printed config");
    assert_eq!(printed, tallyd::config::Config::default());
}

#[test]
fn bad_environment_is_a_clear_error() {
    let out = command()
        .arg("check-config")
        .env("TALLYD_STATSD__MAX_TAGS", "lots")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TALLYD_STATSD__MAX_TAGS"));
}

#[test]
fn version_flag() {
    let out = command().arg("--version").output().expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tallyd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_checks_that_a_used_queue_directory_is_writable() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let bad = file.join("queue");
    let run = |queue: &std::path::Path, key: &str| {
        command()
            .arg("check-config")
            .env("TALLYD_QUEUE__DIRECTORY", queue)
            .env("DD_API_KEY", key)
            .output()
            .expect("run")
    };
    let out = run(&bad, "abc");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("queue.directory") && err.contains("not a writable directory"),
        "{err}"
    );
    // Without a queue user the directory is not needed.
    assert!(run(&bad, "").status.success());
    // A directory that does not exist yet under a writable one is fine, and is not created.
    let later = dir.path().join("later").join("queue");
    assert!(run(&later, "abc").status.success());
    assert!(!later.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        1,
        "no probe left"
    );
}

/// `print-config` run with exactly `vars`, placed in the process environment in this order
/// (`env -i` adds them one after the other; `Command::env` would sort them).
fn print_config_with_env_in_order(vars: &[(&str, &str)]) -> toml::Table {
    let mut cmd = std::process::Command::new("env");
    cmd.env_clear().arg("-i");
    for (k, v) in vars {
        cmd.arg(format!("{k}={v}"));
    }
    let out = cmd
        .arg(common::bin())
        .arg("print-config")
        .output()
        .expect("run env -i tallyd print-config");
    assert!(
        out.status.success(),
        "{vars:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("print-config output is TOML")
}

#[test]
fn tallyd_variables_win_over_datadog_aliases_in_either_order() {
    // (alias, TALLYD_ variable): the TALLYD_ one wins whichever comes first.
    let port = ("DD_DOGSTATSD_PORT", "9125");
    let udp = ("TALLYD_STATSD__UDP_LISTEN", "127.0.0.1:7000");
    for vars in [[port, udp], [udp, port]] {
        let v = print_config_with_env_in_order(&vars);
        assert_eq!(
            v["statsd"]["udp_listen"].as_str(),
            Some("127.0.0.1:7000"),
            "{vars:?}"
        );
        // The alias still moves what no TALLYD_ variable sets.
        assert_eq!(
            v["statsd"]["tcp_listen"].as_str(),
            Some("0.0.0.0:9125"),
            "{vars:?}"
        );
    }
    // The key is shown redacted when set, "" when not: an empty TALLYD_ key beats DD_API_KEY,
    // and a TALLYD_ key beats an empty DD_API_KEY.
    for (tallyd, dd, shown) in [("", "abc", ""), ("abc", "", "<redacted>")] {
        let a = ("DD_API_KEY", dd);
        let b = ("TALLYD_DATADOG__API_KEY", tallyd);
        for vars in [[a, b], [b, a]] {
            let v = print_config_with_env_in_order(&vars);
            assert_eq!(v["datadog"]["api_key"].as_str(), Some(shown), "{vars:?}");
        }
    }
}

#[test]
fn two_spellings_of_one_tallyd_key_are_an_error() {
    let out = command()
        .arg("check-config")
        .env("TALLYD_STATSD__UDP_LISTEN", "127.0.0.1:7000")
        .env("TALLYD_statsd__udp_listen", "127.0.0.1:7001")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TALLYD_STATSD__UDP_LISTEN")
            && err.contains("TALLYD_statsd__udp_listen")
            && err.contains("statsd.udp_listen"),
        "{err}"
    );
}

#[test]
fn a_non_utf8_environment_is_an_error_only_where_tallyd_reads_it() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"caf\xe9");
    // Someone else's variable: ignored, as before it would have panicked.
    let out = command()
        .arg("check-config")
        .env("SOME_OTHER_TOOL", bad)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One of tallyd's: a clear error naming it, no panic.
    let out = command()
        .arg("check-config")
        .env("TALLYD_STATSD__UDP_LISTEN", bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TALLYD_STATSD__UDP_LISTEN")
            && err.contains("UTF-8")
            && !err.contains("panicked"),
        "{err}"
    );
}

/// A config file pointing `tallyd send` and `tallyd health` at the running instance `t`.
fn client_config(t: &common::Tallyd, extra: &str) -> std::path::PathBuf {
    let p = t.path("client.toml");
    let text = format!(
        "[statsd]\nudp_listen = \"{}\"\ntcp_listen = \"{}\"\n[http]\nlisten = \"{}\"\n{extra}",
        t.udp.expect("udp"),
        t.tcp.expect("tcp"),
        t.http
    );
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn send_delivers_over_udp_tcp_and_the_unix_socket() {
    let t = common::Tallyd::start("[statsd]\nunix_socket = \"@DIR@/statsd.sock\"\n");
    let cfg = client_config(&t, "");
    let run = |args: &[&str]| {
        let out = command()
            .arg("--config")
            .arg(&cfg)
            .arg("send")
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = run(&["cli.send:1|c", "cli.gauge:7|g"]);
    assert!(
        said.contains("2 line(s)") && said.contains("udp:"),
        "{said}"
    );
    assert!(run(&["--tcp", "cli.send:2|c"]).contains("tcp:"));
    let sock = t.path("statsd.sock");
    let sock = sock.to_str().expect("utf-8 path");
    assert!(run(&["--unix", sock, "cli.send:4|c"]).contains("unix:"));
    let addr = t.udp.expect("udp").to_string();
    run(&["--addr", &addr, "cli.send:8|c"]);
    let m = t.wait_value("cli_send_total", 15.0);
    assert_eq!(common::value(&m, "cli_gauge"), Some(7.0));

    // Nothing listening there: UDP cannot tell, TCP can.
    let closed = common::closed_port();
    let out = command()
        .args([
            "send",
            "--tcp",
            "--addr",
            &format!("127.0.0.1:{}", closed.port),
            "x:1|c",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot send"));
}

#[test]
fn health_exits_zero_only_when_ready_answers_200() {
    let mut t = common::Tallyd::start("");
    let cfg = client_config(&t, "");
    let health = |args: &[&str]| {
        command()
            .arg("--config")
            .arg(&cfg)
            .arg("health")
            .args(args)
            .output()
            .expect("run")
    };
    let out = health(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("/health/ready: 200"));
    let out = health(&["--live"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("/health/live: 200"));
    let url = format!("http://{}/health/ready", t.http);
    assert!(health(&["--url", &url]).status.success());
    // Another path that is not 200, a closed port, and https are failures.
    let missing = format!("http://{}/nothing-here", t.http);
    assert_eq!(health(&["--url", &missing]).status.code(), Some(1));
    let closed = common::closed_port();
    let out = health(&[
        "--url",
        &format!("http://127.0.0.1:{}/health/ready", closed.port),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        health(&["--url", "https://127.0.0.1:1/"]).status.code(),
        Some(1)
    );
    // Once tallyd has stopped, it fails too.
    let http = t.http;
    assert!(t.terminate().success());
    let out = health(&["--url", &format!("http://{http}/health/ready")]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn health_sends_the_admin_token_when_health_is_not_public() {
    let extra = "[http]\nadmin_token = \"tok-1\"\ntrust_loopback = false\npublic_routes = []\n";
    let t = common::Tallyd::start(extra);
    assert!(
        t.get("/health/ready").0 >= 400,
        "health is behind the admin rule"
    );
    let with = client_config(&t, "admin_token = \"tok-1\"\n");
    let out = command()
        .arg("--config")
        .arg(&with)
        .arg("health")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_clap_definitions() {
    for shell in ["bash", "zsh", "fish"] {
        let out = command()
            .args(["completions", shell])
            .output()
            .expect("run");
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for sub in ["check-config", "send", "health", "completions"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let out = command().arg("man").output().expect("run");
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH tallyd"),
        "{page}"
    );
    for word in ["check\\-config", "health", "send", "\\-\\-config"] {
        assert!(page.contains(word), "man page lacks {word}");
    }
    // The Debian package ships the page from the tree; it must be the binary's own.
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/deb/tallyd.1"),
    )
    .expect("packaging/deb/tallyd.1");
    assert!(
        shipped == page,
        "packaging/deb/tallyd.1 is stale: run `cargo run -- man > packaging/deb/tallyd.1`"
    );
    // man(1) renders it, when installed.
    if std::path::Path::new("/usr/bin/man").exists() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("tallyd.1");
        std::fs::write(&p, page.as_bytes()).expect("write");
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(&p)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .output()
            .expect("man");
        assert!(String::from_utf8_lossy(&out.stdout).contains("tallyd"));
    }
}
