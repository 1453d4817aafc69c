//! The shipped dashboards and rules name only what tallyd really exports. One real tallyd runs
//! with every component on (StatsD, GPS with a points file, OTLP, Datadog delivery to the
//! intake stand-in, remote_write, OTLP export and a webhook notifier to a closed port, host
//! metrics), gets StatsD and GPS traffic (a valid and an invalid fix), and the test reads what
//! it exports:
//! `/metrics` (families, samples and their labels) and the series the Datadog intake received.
//! Then every query is parsed and checked against that, so a renamed metric or label fails here:
//! - `packaging/dashboards/grafana-tallyd.json` and `packaging/prometheus/tallyd-rules.yml`:
//!   every PromQL expression is parsed (promql-parser); each selector names an exported sample
//!   (or a recording rule of the file, or Prometheus's own `up`), each label matcher names a
//!   label of that metric and an `=` matcher a value it has, and each `by (...)` label is on
//!   one of the aggregated metrics.
//! - `packaging/dashboards/datadog-tallyd.json`: each `tallyd.*` metric is listed in
//!   `packaging/datadog/conf.d/openmetrics.d/conf.yaml` and maps to an exported family of the
//!   right kind (`.count` for counters); every other metric is one the intake received from
//!   tallyd; each `by {...}` tag is on it.
//! - A real Prometheus (Debian's) scrapes a second such tallyd and evaluates the rules file:
//!   every rule evaluates without error, the recording rules yield series, and every Grafana
//!   panel query runs and returns series (unless it filters with a comparison).

mod common;
mod exported;

use std::collections::BTreeSet;

use exported::{exported, read, Exported};
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, LabelModifier};

/// Labels every scraped series carries in Prometheus (the target's), never in tallyd's output.
const TARGET_LABELS: &[&str] = &["job", "instance"];

// ---- PromQL ----

/// A selector: its metric name (if any) and its matchers (label, value of an `=` matcher).
type Selector = (Option<String>, Vec<(String, Option<String>)>);

/// Selectors of `expr` and, per aggregation with `by (...)`, its labels with the names of the
/// selectors under it.
#[derive(Default)]
struct Walk {
    selectors: Vec<Selector>,
    groupings: Vec<(Vec<String>, Vec<Option<String>>)>,
}

fn walk(e: &Expr, out: &mut Walk) {
    match e {
        Expr::Aggregate(a) => {
            let before = out.selectors.len();
            walk(&a.expr, out);
            if let Some(p) = &a.param {
                walk(p, out);
            }
            if let Some(LabelModifier::Include(l)) = &a.modifier {
                let names = out.selectors[before..]
                    .iter()
                    .map(|s| s.0.clone())
                    .collect();
                out.groupings.push((l.labels.clone(), names));
            }
        }
        Expr::Unary(u) => walk(&u.expr, out),
        Expr::Binary(b) => {
            walk(&b.lhs, out);
            walk(&b.rhs, out);
        }
        Expr::Paren(p) => walk(&p.expr, out),
        Expr::Subquery(s) => walk(&s.expr, out),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        Expr::VectorSelector(v) => out.selectors.push(selector(v)),
        Expr::MatrixSelector(m) => out.selectors.push(selector(&m.vs)),
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, out);
            }
        }
    }
}

fn selector(v: &promql_parser::parser::VectorSelector) -> Selector {
    let mut name = v.name.clone();
    let mut matchers = Vec::new();
    for m in &v.matchers.matchers {
        if m.name == "__name__" {
            if let MatchOp::Equal = m.op {
                name = Some(m.value.clone());
            }
            continue;
        }
        let value = match m.op {
            MatchOp::Equal if !m.value.is_empty() => Some(m.value.clone()),
            _ => None,
        };
        matchers.push((m.name.clone(), value));
    }
    (name, matchers)
}

/// Checks one PromQL expression; returns what is wrong with it.
fn check_promql(
    what: &str,
    expr: &str,
    exported: &Exported,
    recorded: &BTreeSet<String>,
) -> Vec<String> {
    let parsed = match parser::parse(expr) {
        Ok(e) => e,
        Err(e) => return vec![format!("{what}: does not parse ({e}): {expr}")],
    };
    let mut w = Walk::default();
    walk(&parsed, &mut w);
    let mut errors = Vec::new();
    let labels_of = |name: &str| -> Option<BTreeSet<String>> {
        if name == "up" || recorded.contains(name) {
            return None; // Prometheus's own series, or one this file records: not tallyd's.
        }
        let sets = exported.samples.get(name)?;
        Some(sets.iter().flat_map(|l| l.keys().cloned()).collect())
    };
    if w.selectors.is_empty() {
        errors.push(format!("{what}: names no metric: {expr}"));
    }
    for (name, matchers) in &w.selectors {
        let Some(name) = name else {
            errors.push(format!("{what}: a selector without a metric name: {expr}"));
            continue;
        };
        if name != "up" && !recorded.contains(name) && !exported.samples.contains_key(name) {
            errors.push(format!("{what}: {name} is not exported by tallyd: {expr}"));
            continue;
        }
        let Some(labels) = labels_of(name) else {
            continue;
        };
        for (label, value) in matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            if !labels.contains(label) {
                errors.push(format!("{what}: {name} has no label {label}: {expr}"));
            } else if let Some(v) = value {
                let has = exported.samples[name]
                    .iter()
                    .any(|l| l.get(label) == Some(v));
                if !has {
                    errors.push(format!("{what}: {name} never has {label}=\"{v}\": {expr}"));
                }
            }
        }
    }
    for (by, names) in &w.groupings {
        for label in by {
            if TARGET_LABELS.contains(&label.as_str()) || label == "le" {
                continue;
            }
            let found = names.iter().flatten().any(|n| match labels_of(n) {
                None => true,
                Some(l) => l.contains(label),
            });
            if !found {
                errors.push(format!(
                    "{what}: `by ({label})` but none of {names:?} has that label: {expr}"
                ));
            }
        }
    }
    errors
}

/// Grafana's variables, replaced by what a query with "All" selected sends.
fn grafana_expr(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$instance", ".*")
        .replace("$job", ".*")
}

/// Every panel (rows' nested panels included) of a Grafana dashboard.
fn grafana_panels(v: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(grafana_panels(p));
    }
    out
}

#[test]
fn grafana_panels_query_exported_metrics() {
    let exported = exported();
    let dash: serde_json::Value =
        serde_json::from_str(&read("packaging/dashboards/grafana-tallyd.json")).expect("json");
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    let rows: Vec<&str> = grafana_panels(&dash)
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in ["Ingest", "Drops", "Flush", "queues", "Alerts", "GPS"] {
        assert!(
            rows.iter().any(|r| r.contains(want)),
            "no row about {want}: {rows:?}"
        );
    }
    let mut errors = Vec::new();
    let mut queries = 0;
    for p in grafana_panels(&dash) {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            errors.push(format!("panel {title:?} has no query"));
        }
        for t in targets {
            let Some(expr) = t["expr"].as_str() else {
                errors.push(format!("panel {title:?}: a target without expr"));
                continue;
            };
            queries += 1;
            let what = format!("grafana panel {title:?}");
            errors.extend(check_promql(
                &what,
                &grafana_expr(expr),
                exported,
                &BTreeSet::new(),
            ));
        }
    }
    // The template variables query tallyd_build_info.
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["definition"].as_str() {
            assert!(q.contains("tallyd_build_info"), "{q}");
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(queries >= 40, "only {queries} queries");
}

#[test]
fn prometheus_rules_query_exported_metrics() {
    use yaml_rust2::YamlLoader;
    let exported = exported();
    let docs =
        YamlLoader::load_from_str(&read("packaging/prometheus/tallyd-rules.yml")).expect("yaml");
    let groups = docs[0]["groups"].as_vec().expect("groups");
    let mut recorded = BTreeSet::new();
    let mut rules = Vec::new();
    for g in groups {
        for r in g["rules"].as_vec().expect("rules") {
            let expr = r["expr"].as_str().expect("expr").to_string();
            if let Some(name) = r["record"].as_str() {
                recorded.insert(name.to_string());
                rules.push((format!("record {name}"), expr));
            } else {
                let name = r["alert"].as_str().expect("alert or record");
                rules.push((format!("alert {name}"), expr));
            }
        }
    }
    let alerts: BTreeSet<&str> = rules
        .iter()
        .filter_map(|(w, _)| w.strip_prefix("alert "))
        .collect();
    for want in [
        "TallydDropsRising",
        "TallydQueueBacklog",
        "TallydDeadLettersGrowing",
        "TallydFlushSlow",
        "TallydNoData",
    ] {
        assert!(alerts.contains(want), "no alert {want}: {alerts:?}");
    }
    let mut errors = Vec::new();
    for (what, expr) in &rules {
        errors.extend(check_promql(what, expr, exported, &recorded));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

// ---- Datadog ----

/// Every metric query string in a Datadog dashboard (`q` or `queries[].query`, at any depth).
fn datadog_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if let (true, Some(q)) = (k == "q" || k == "query", v.as_str()) {
                    out.push(q.to_string());
                } else {
                    datadog_queries(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| datadog_queries(v, out)),
        _ => {}
    }
}

/// The OpenMetrics check's metric list (names without the raw prefix `tallyd_`).
fn openmetrics_metrics() -> (String, String, Vec<String>) {
    use yaml_rust2::YamlLoader;
    let docs = YamlLoader::load_from_str(&read("packaging/datadog/conf.d/openmetrics.d/conf.yaml"))
        .expect("yaml");
    let inst = &docs[0]["instances"][0];
    let ns = inst["namespace"].as_str().expect("namespace").to_string();
    let prefix = inst["raw_metric_prefix"]
        .as_str()
        .expect("raw_metric_prefix")
        .to_string();
    let metrics = inst["metrics"]
        .as_vec()
        .expect("metrics")
        .iter()
        .map(|m| m.as_str().expect("a plain metric name").to_string())
        .collect();
    (ns, prefix, metrics)
}

#[test]
fn datadog_widgets_query_metrics_tallyd_sends_or_exports() {
    let exported = exported();
    let dash: serde_json::Value =
        serde_json::from_str(&read("packaging/dashboards/datadog-tallyd.json")).expect("json");
    let groups: Vec<&str> = dash["widgets"]
        .as_array()
        .expect("widgets")
        .iter()
        .filter_map(|w| w["definition"]["title"].as_str())
        .collect();
    for want in [
        "Platform overview",
        "Live tracking",
        "Queue health",
        "GPS TCP server",
    ] {
        assert!(groups.contains(&want), "no group {want:?}: {groups:?}");
    }
    let (ns, prefix, listed) = openmetrics_metrics();
    let mut errors = Vec::new();
    // Every metric the check collects is a family tallyd exports (a counter by its base name).
    let kind_of = |m: &str| -> Option<&str> {
        let full = format!("{prefix}{m}");
        match exported
            .families
            .get(&format!("{full}_total"))
            .map(String::as_str)
        {
            Some("counter") => Some("counter"),
            _ => exported.families.get(&full).map(String::as_str),
        }
    };
    for m in &listed {
        if kind_of(m).is_none() {
            errors.push(format!(
                "openmetrics conf.yaml lists {m}: no {prefix}{m} on /metrics"
            ));
        }
    }
    let mut queries = Vec::new();
    datadog_queries(&dash, &mut queries);
    assert!(queries.len() >= 30, "only {} queries", queries.len());
    let metric_re =
        regex::Regex::new(r"(?:avg|sum|min|max):([A-Za-z0-9_.]+)\{[^}]*\}(?: by \{([^}]*)\})?")
            .expect("regex");
    for q in &queries {
        let mut named = 0;
        for c in metric_re.captures_iter(q) {
            named += 1;
            let metric = &c[1];
            let by: Vec<&str> = c
                .get(2)
                .map(|b| b.as_str().split(',').map(str::trim).collect())
                .unwrap_or_default();
            let tags: BTreeSet<String> = if let Some(own) = metric.strip_prefix(&format!("{ns}.")) {
                // tallyd's own metric through the OpenMetrics check.
                let (base, counter) = match own.strip_suffix(".count") {
                    Some(b) if kind_of(b) == Some("counter") => (b, true),
                    _ => (own, false),
                };
                if !listed.iter().any(|l| l == base) {
                    errors.push(format!("{q}: {base} is not in the OpenMetrics conf.yaml"));
                    continue;
                }
                match (kind_of(base), counter) {
                    (Some("counter"), true) | (Some("gauge"), false) => {}
                    (k, _) => {
                        errors.push(format!("{q}: {metric} does not fit {prefix}{base} ({k:?})"));
                        continue;
                    }
                }
                let sample = if counter {
                    format!("{prefix}{base}_total")
                } else {
                    format!("{prefix}{base}")
                };
                let Some(sets) = exported.samples.get(&sample) else {
                    errors.push(format!("{q}: no sample {sample} on /metrics"));
                    continue;
                };
                sets.iter().flat_map(|l| l.keys().cloned()).collect()
            } else if let Some(tags) = exported.datadog.get(metric) {
                tags.clone()
            } else {
                errors.push(format!(
                    "{q}: tallyd sent no {metric} to the Datadog intake"
                ));
                continue;
            };
            for tag in by {
                if tag != "host" && !tags.contains(tag) {
                    errors.push(format!("{q}: {metric} has no tag {tag} (has {tags:?})"));
                }
            }
        }
        if named == 0 {
            errors.push(format!("query names no metric: {q}"));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn the_checks_catch_a_wrong_name_label_or_value() {
    // The checker itself: a misspelt metric, a label the metric lacks, a value it never has and
    // a grouping label nobody has are reported; the right query is not.
    let exported = exported();
    let none = BTreeSet::new();
    let ok = r#"sum by (queue) (rate(tallyd_forwarder_requests_total{result="error"}[5m]))"#;
    assert!(check_promql("ok", ok, exported, &none).is_empty());
    for bad in [
        "rate(tallyd_forwarder_request_total[5m])",
        r#"tallyd_forwarder_queue_depth{result="x"}"#,
        r#"tallyd_forwarder_queue_depth{queue="nope"}"#,
        "sum by (protocol) (tallyd_forwarder_queue_depth)",
    ] {
        assert_eq!(
            check_promql("bad", bad, exported, &none).len(),
            1,
            "not caught: {bad}"
        );
    }
}

// ---- a real Prometheus ----

/// `GET` `path` on Prometheus; the JSON answer.
fn prom_get(prom: &common::External, path: &str) -> serde_json::Value {
    let (code, body) = common::http_request(prom.addr, "GET", path, &[], "");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {code} {body}"));
    assert_eq!(code, 200, "{path}: {body}");
    v
}

fn prom_query(prom: &common::External, q: &str) -> serde_json::Value {
    prom_get(
        prom,
        &format!("/api/v1/query?query={}", common::percent_encode(q)),
    )
}

#[test]
fn a_real_prometheus_evaluates_the_rules_and_the_panels() {
    // Debian's Prometheus scrapes the everything-on tallyd every second and evaluates
    // tallyd-rules.yml every second (the file's 30 s group interval shortened for the test):
    // every rule must evaluate without error, the recording rules must produce series from
    // tallyd's real exposition, and every Grafana panel query must run and return data
    // (unless it filters with a comparison, where no series is a valid answer).
    let bin = common::system_tool("PROMETHEUS_BIN", &["prometheus"], "prometheus");
    let running = exported::start_everything();
    let target = running.tallyd.http;
    let rules =
        read("packaging/prometheus/tallyd-rules.yml").replace("interval: 30s", "interval: 1s");
    assert!(
        rules.contains("interval: 1s"),
        "the recording group's interval moved"
    );
    let prom = common::start_external("prometheus", &bin, 60, |dir, addr| {
        std::fs::write(dir.join("tallyd-rules.yml"), &rules).expect("write rules");
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: tallyd\n    static_configs:\n      - targets: ['{target}']\n",
                dir.join("tallyd-rules.yml").display()
            ),
        )
        .expect("write config");
        vec![
            format!("--web.listen-address={addr}"),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--config.file={}", cfg.display()),
        ]
    });
    // Values keep arriving, so rates are above zero.
    let feed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let udp = running.tallyd.udp.expect("udp");
    let go = std::sync::Arc::clone(&feed);
    let feeder = std::thread::spawn(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while go.load(std::sync::atomic::Ordering::Relaxed) && std::time::Instant::now() < deadline
        {
            let _ = s.send_to(b"dash.requests:1|c|#route:feed", udp);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });

    // The recording rules have real data once the rate over two scrapes is positive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v = prom_query(&prom, "tallyd:statsd_samples:rate5m > 0");
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tallyd:statsd_samples:rate5m never rose above 0: {v}; targets {}",
            prom_get(&prom, "/api/v1/targets")
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let mut errors = Vec::new();
    // Every rule was evaluated, without error.
    let rules = prom_get(&prom, "/api/v1/rules");
    let mut evaluated = 0;
    for g in rules["data"]["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            evaluated += 1;
            if r["health"] != "ok" {
                errors.push(format!(
                    "rule {} is {}: {}",
                    r["name"], r["health"], r["lastError"]
                ));
            }
        }
    }
    assert!(evaluated >= 25, "only {evaluated} rules loaded: {rules}");
    // Recording rules over tallyd's series produce series.
    for rec in [
        "tallyd:statsd_lines:rate5m{transport=\"udp\"}",
        "tallyd:dropped:rate5m{kind=\"udp_kernel\"}",
        "tallyd:dropped:rate5m{kind=\"queue_payloads\"}",
        "tallyd:forwarder_error_ratio:rate5m{queue=\"remote_write\"}",
        "tallyd:gps_invalid_ratio:rate5m",
    ] {
        let v = prom_query(&prom, rec);
        if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            errors.push(format!("recording rule {rec} has no series: {v}"));
        }
    }
    // Every Grafana panel query runs; one without a comparison returns series.
    let dash: serde_json::Value =
        serde_json::from_str(&read("packaging/dashboards/grafana-tallyd.json")).expect("json");
    let comparison = regex::Regex::new(r"\s(>|<|==|!=|>=|<=)\s").expect("regex");
    for p in grafana_panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let Some(expr) = t["expr"].as_str() else {
                continue;
            };
            let q = grafana_expr(expr);
            let (code, body) = common::http_request(
                prom.addr,
                "GET",
                &format!("/api/v1/query?query={}", common::percent_encode(&q)),
                &[],
                "",
            );
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if code != 200 || v["status"] != "success" {
                errors.push(format!("panel {}: {q}: {code} {body}", p["title"]));
            } else if !comparison.is_match(&q)
                && v["data"]["result"].as_array().is_none_or(|r| r.is_empty())
            {
                errors.push(format!("panel {}: {q}: no series", p["title"]));
            }
        }
    }
    feed.store(false, std::sync::atomic::Ordering::Relaxed);
    feeder.join().expect("feeder");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

// ---- the compose file ----

#[test]
fn the_compose_file_wires_the_app_tallyd_and_prometheus() {
    // No compose engine runs here (docs/operations.md, "What CI verifies"): check what it would
    // read. The app shares tallyd's network namespace and socket volume and sends to the socket
    // path tallyd is told to create; Prometheus mounts files that exist, scrapes tallyd and loads
    // the rules where its config says.
    use yaml_rust2::YamlLoader;
    let doc = &YamlLoader::load_from_str(&read("packaging/docker-compose.yml")).expect("yaml")[0];
    let svc = &doc["services"];
    let tallyd = &svc["tallyd"];
    assert_eq!(
        tallyd["build"]["dockerfile"].as_str(),
        Some("packaging/Dockerfile")
    );
    let socket = tallyd["environment"]["TALLYD_STATSD__UNIX_SOCKET"]
        .as_str()
        .expect("tallyd's socket path");
    let mounts = |s: &yaml_rust2::Yaml| -> Vec<String> {
        s["volumes"]
            .as_vec()
            .expect("volumes")
            .iter()
            .map(|v| v.as_str().expect("volume").to_string())
            .collect()
    };
    let socket_dir = socket.rsplit_once('/').expect("a path").0;
    let shared = format!("dsd:{socket_dir}");
    assert!(mounts(tallyd).contains(&shared), "{:?}", mounts(tallyd));
    assert!(mounts(tallyd).contains(&"tallyd-state:/var/lib/tallyd".to_string()));
    let app = &svc["app"];
    assert_eq!(app["network_mode"].as_str(), Some("service:tallyd"));
    assert!(mounts(app).contains(&shared), "{:?}", mounts(app));
    let command: Vec<&str> = app["command"]
        .as_vec()
        .expect("command")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    let script = command.join("\n");
    assert!(script.contains(&format!("\"{socket}\"")), "{script}");
    assert!(script.contains("(\"127.0.0.1\", 8125)"), "{script}");
    let prom = &svc["prometheus"];
    let mut config_target = None;
    for m in mounts(prom) {
        let mut parts = m.split(':');
        let (src, dst) = (parts.next().expect("src"), parts.next().expect("dst"));
        let local = std::path::Path::new(&exported::root("packaging")).join(src);
        assert!(local.is_file(), "prometheus mounts {src}, which is missing");
        if dst.ends_with("prometheus.yml") {
            config_target = Some(src.to_string());
        }
    }
    let cfg = YamlLoader::load_from_str(&read(&format!(
        "packaging/{}",
        config_target.expect("a prometheus.yml mount")
    )))
    .expect("yaml");
    let cfg = &cfg[0];
    let rule_file = cfg["rule_files"][0].as_str().expect("rule file");
    assert!(
        mounts(prom)
            .iter()
            .any(|m| m.ends_with(&format!(":{rule_file}:ro"))),
        "{rule_file} is not mounted"
    );
    let job = &cfg["scrape_configs"][0];
    assert_eq!(
        job["job_name"].as_str(),
        Some("tallyd"),
        "TallydDown expects job=\"tallyd\""
    );
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some("tallyd:9090")
    );
}
