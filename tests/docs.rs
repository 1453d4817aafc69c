//! The documentation quotes only what exists. For README.md and every docs/*.md page:
//! - config keys: every `section.key` in backticks (section being a table of the config), every
//!   `[table]` and every `TALLYD_SECTION__KEY` variable names a key of the effective config
//!   (`tallyd print-config`: the defaults, every key); under a table that is empty by default
//!   (headers, notifiers, pidfiles) any key is a user's and passes;
//! - metric names: every `tallyd_*` name in backticks (with `*` as a wildcard) is a family or
//!   sample a running tallyd exports, and the label names quoted with it (`{queue,result="x"}`)
//!   are labels of it; every `gps_tcp.*` / `live.*` name is one tallyd sent to the Datadog
//!   intake and every `gps_tcp_*` one is on /metrics. The running tallyd is tests/exported/
//!   (every component on, traffic on each).
//!
//! Host metric names (`system.*`) depend on the machine (disks, interfaces, cgroup) and are not
//! checked here.

mod common;
mod exported;

use std::collections::BTreeSet;

use exported::{exported, root, Labels};

/// Dotted spans that start like a config key but are something else.
const NOT_KEYS: &[(&str, &str)] = &[
    ("datadog.yaml", "the Datadog Agent's configuration file"),
    ("http.server.duration", "an OpenTelemetry metric name"),
];

/// Spans that look like metric names but are something else.
const NOT_METRICS: &[(&str, &str)] = &[(
    "gps_tcp_server",
    "a section of GET /api/monitoring/dashboard",
)];

/// Every documentation page: (path, text).
fn pages() -> Vec<(String, String)> {
    let mut out = vec![("README.md".to_string(), read_rel("README.md"))];
    let mut names: Vec<String> = std::fs::read_dir(root("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "docs/ has only {names:?}");
    for n in names {
        let rel = format!("docs/{n}");
        out.push((rel.clone(), read_rel(&rel)));
    }
    out
}

fn read_rel(rel: &str) -> String {
    std::fs::read_to_string(root(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The inline code spans of a Markdown text (fenced blocks left out), with the line each
/// starts on; a span wrapped onto the next line is joined with a space, as Markdown renders it.
fn spans(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    // The span still open at the end of the previous line: (its line, its text so far).
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if open.is_none() && line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        if let Some((at, mut code)) = open.take() {
            match rest.find('`') {
                Some(end) => {
                    code.push(' ');
                    code.push_str(rest[..end].trim_start());
                    out.push((at, code));
                    rest = &rest[end + 1..];
                }
                // A paragraph ends (blank line) or goes on without closing: drop the span.
                None if rest.trim().is_empty() => continue,
                None => {
                    code.push(' ');
                    code.push_str(rest.trim());
                    open = Some((at, code));
                    continue;
                }
            }
        }
        while let Some(start) = rest.find('`') {
            let after = &rest[start + 1..];
            match after.find('`') {
                Some(end) => {
                    out.push((i + 1, after[..end].to_string()));
                    rest = &after[end + 1..];
                }
                None => {
                    open = Some((i + 1, after.trim_end().to_string()));
                    break;
                }
            }
        }
    }
    out
}

/// The effective config's keys as dotted paths, and the tables that are empty by default.
fn config_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let out = common::command()
        .arg("print-config")
        .output()
        .expect("run tallyd print-config");
    assert!(out.status.success(), "{out:?}");
    let table: toml::Table =
        toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("print-config is TOML");
    let mut keys = BTreeSet::new();
    let mut open = BTreeSet::new();
    fn flatten(
        prefix: &str,
        t: &toml::Table,
        keys: &mut BTreeSet<String>,
        open: &mut BTreeSet<String>,
    ) {
        for (k, v) in t {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            keys.insert(path.clone());
            if let toml::Value::Table(sub) = v {
                if sub.is_empty() {
                    open.insert(path.clone());
                }
                flatten(&path, sub, keys, open);
            }
        }
    }
    flatten("", &table, &mut keys, &mut open);
    assert!(
        keys.contains("queue.directory") && keys.len() > 150,
        "{keys:?}"
    );
    (keys, open)
}

/// `*` matches any run of characters.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || !s.ends_with(last) || s.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

fn key_exists(key: &str, keys: &BTreeSet<String>, open: &BTreeSet<String>) -> bool {
    if key.contains('*') {
        return keys.iter().any(|k| glob(key, k));
    }
    keys.contains(key) || open.iter().any(|t| key.starts_with(&format!("{t}.")))
}

#[test]
fn config_keys_in_the_docs_exist() {
    let (keys, open) = config_keys();
    let sections: BTreeSet<&str> = keys
        .iter()
        .filter(|k| !k.contains('.'))
        .map(|k| k.as_str())
        .collect();
    let key_re = regex::Regex::new(r"^([a-z_]+)\.([A-Za-z0-9_.*]+)").expect("regex");
    let table_re = regex::Regex::new(r"^\[\[?([a-z_]+(?:\.[A-Za-z_]+)*)\]\]?$").expect("regex");
    let env_re = regex::Regex::new(r"TALLYD_([A-Z0-9_]+?)__([A-Z0-9_]+)").expect("regex");
    let mut errors = Vec::new();
    let mut checked = 0;
    for (page, text) in pages() {
        for (line, span) in spans(&text) {
            if let Some(c) = key_re.captures(&span) {
                if !sections.contains(&c[1]) {
                    continue;
                }
                let key = format!("{}.{}", &c[1], c[2].trim_end_matches('.'));
                if NOT_KEYS.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                checked += 1;
                if !key_exists(&key, &keys, &open) {
                    errors.push(format!("{page}:{line}: `{span}`: no config key {key}"));
                }
            } else if let Some(c) = table_re.captures(&span) {
                let t = &c[1];
                checked += 1;
                // `[alerts.notifiers.NAME]`: a user's name under an open table.
                if !key_exists(t, &keys, &open) {
                    errors.push(format!("{page}:{line}: `{span}`: no config table {t}"));
                }
            }
        }
        for (i, l) in text.lines().enumerate() {
            for c in env_re.captures_iter(l) {
                // TALLYD_ALERTS__HEALTH__DLQ_WARN is alerts.health.dlq_warn.
                let rest = c[2].to_lowercase().replace("__", ".");
                let key = format!("{}.{rest}", c[1].to_lowercase());
                checked += 1;
                if !key_exists(&key, &keys, &open) {
                    errors.push(format!("{page}:{}: {}: no config key {key}", i + 1, &c[0]));
                }
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(checked > 100, "only {checked} config keys quoted?");
}

/// Label names quoted in `{a,b="x|y",c=...}`.
fn quoted_labels(spec: &str) -> Vec<String> {
    spec.trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .map(|p| p.split('=').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn metric_names_in_the_docs_are_exported() {
    let ex = exported();
    // Every name a reader may quote: samples, and families by their base names too.
    let mut names: BTreeSet<String> = ex.samples.keys().cloned().collect();
    for (f, kind) in &ex.families {
        names.insert(f.clone());
        if kind == "counter" {
            names.insert(f.trim_end_matches("_total").to_string());
        }
    }
    // The label names seen on the samples of a (base) name.
    let labels_of = |name: &str| -> BTreeSet<String> {
        ex.samples
            .iter()
            .filter(|(s, _)| {
                *s == name
                    || s.strip_prefix(name).is_some_and(|suffix| {
                        ["_total", "_bucket", "_sum", "_count"].contains(&suffix)
                    })
            })
            .flat_map(|(_, sets): (&String, &Vec<Labels>)| {
                sets.iter().flat_map(|l| l.keys().cloned())
            })
            .collect()
    };
    let own_re = regex::Regex::new(r"\b(tallyd_[a-z0-9_*]+|gps_tcp_[a-z0-9_*]+)(\{[^}]*\})?")
        .expect("regex");
    let dd_re = regex::Regex::new(r"\b((?:gps_tcp|live)\.[a-z0-9_.]+)(\{[^}]*\})?").expect("regex");
    let mut errors = Vec::new();
    let mut checked = 0;
    for (page, text) in pages() {
        for (line, span) in spans(&text) {
            for c in own_re.captures_iter(&span) {
                let name = c[1].trim_end_matches('_');
                if name.ends_with("_total_total") || NOT_METRICS.iter().any(|(n, _)| *n == name) {
                    continue; // the statsd_exporter naming tallyd avoids, or not a metric
                }
                checked += 1;
                let matching: Vec<&String> = names.iter().filter(|n| glob(name, n)).collect();
                if matching.is_empty() {
                    errors.push(format!("{page}:{line}: `{span}`: {name} is not exported"));
                    continue;
                }
                if let Some(spec) = c.get(2) {
                    let have: BTreeSet<String> =
                        matching.iter().flat_map(|n| labels_of(n)).collect();
                    for l in quoted_labels(spec.as_str()) {
                        if !have.contains(&l) {
                            errors.push(format!(
                                "{page}:{line}: `{span}`: {name} has no label {l} (has {have:?})"
                            ));
                        }
                    }
                }
            }
            for c in dd_re.captures_iter(&span) {
                let name = &c[1];
                checked += 1;
                // A histogram (live.latency) reaches Datadog as name.avg, name.count, ...
                let sent: Vec<&String> = ex
                    .datadog
                    .keys()
                    .filter(|m| *m == name || m.starts_with(&format!("{name}.")))
                    .collect();
                if sent.is_empty() {
                    errors.push(format!("{page}:{line}: `{span}`: tallyd sends no {name}"));
                    continue;
                }
                if let Some(spec) = c.get(2) {
                    let have: BTreeSet<String> = sent
                        .iter()
                        .flat_map(|m| ex.datadog[*m].iter().cloned())
                        .collect();
                    for l in quoted_labels(spec.as_str()) {
                        if !have.contains(&l) {
                            errors.push(format!(
                                "{page}:{line}: `{span}`: {name} has no tag {l} (has {have:?})"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{}\n(a metric that only exists under some setting: turn that on in tests/exported/)",
        errors.join("\n")
    );
    assert!(checked > 100, "only {checked} metric names quoted?");
}

#[test]
fn the_checks_catch_a_wrong_key_or_name() {
    let (keys, open) = config_keys();
    assert!(key_exists("queue.directory", &keys, &open));
    assert!(key_exists("otlp.*_listen", &keys, &open));
    assert!(key_exists(
        "remote_write.headers.X-Scope-OrgID",
        &keys,
        &open
    ));
    assert!(!key_exists("queue.directroy", &keys, &open));
    assert!(!key_exists("statsd.udp_port", &keys, &open));
    assert!(key_exists("alerts.health.dlq_warn", &keys, &open));
    assert!(glob("tallyd_forwarder_*", "tallyd_forwarder_queue_depth"));
    assert!(!glob(
        "tallyd_forwarder_*_total",
        "tallyd_forwarder_queue_depth"
    ));
    assert_eq!(
        quoted_labels(r#"{server,reason="a|b"}"#),
        ["server", "reason"]
    );
    let spans = spans("a `x.y` b `[q]`\n```\n`not this`\n```\nwrapped `a\nb` and `open\n\nend");
    let want = [(1, "x.y"), (1, "[q]"), (5, "a b")];
    assert_eq!(spans, want.map(|(l, s)| (l, s.to_string())));
}
