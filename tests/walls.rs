//! The layering walls of ARCHITECTURE.md, checked: every `crate::<module>` path in a source
//! file (outside its test module) must name a module its layer may use, and no source file is
//! over 600 lines outside its tests. A forbidden edge fails here with the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which top-level modules each module may name. `base` is the bottom layer; `api` and
/// `topology` compose everything and nothing names them (but `config`, which composes
/// `api::config`, the HTTP section).
const ALLOWED: &[(&str, &[&str])] = &[
    ("base", &[]),
    ("model", &["base"]),
    ("telemetry", &["base", "model"]),
    ("aggregate", &["base", "model", "telemetry"]),
    ("queue", &["base"]),
    (
        "component",
        &["base", "model", "telemetry", "aggregate", "queue"],
    ),
    ("flusher", COMPONENT),
    ("statsd", COMPONENT),
    ("otlp", COMPONENT),
    ("host", COMPONENT),
    ("gps", COMPONENT_QUEUE),
    ("sinks", COMPONENT_QUEUE),
    ("alert", COMPONENT_QUEUE),
    (
        "config",
        &[
            "base",
            "model",
            "aggregate",
            "queue",
            "statsd",
            "otlp",
            "gps",
            "host",
            "sinks",
            "alert",
            "api",
        ],
    ),
    ("api", EVERYTHING_BELOW_COMPOSITION),
    ("topology", TOPOLOGY),
];

/// What a component may use: the layers below the contract, and the contract.
const COMPONENT: &[&str] = &["base", "model", "telemetry", "aggregate", "component"];
/// A component that also keeps a durable queue.
const COMPONENT_QUEUE: &[&str] = &[
    "base",
    "model",
    "telemetry",
    "aggregate",
    "component",
    "queue",
];
/// The topology composes everything.
const TOPOLOGY: &[&str] = &[
    "base",
    "model",
    "telemetry",
    "aggregate",
    "component",
    "queue",
    "flusher",
    "statsd",
    "otlp",
    "gps",
    "host",
    "sinks",
    "alert",
    "config",
    "api",
];
/// What the HTTP API composes: every layer and component except the flusher and topology.
const EVERYTHING_BELOW_COMPOSITION: &[&str] = &[
    "base",
    "model",
    "telemetry",
    "aggregate",
    "component",
    "queue",
    "statsd",
    "otlp",
    "gps",
    "sinks",
    "alert",
];

/// `config` may name only the configuration part of `api`.
const API_FROM_CONFIG: &str = "crate::api::config";

/// Longest source file, outside its test module.
const MAX_LINES: usize = 600;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// A file's code outside its test module: test-only files are skipped whole, and a file's
/// text ends at its `#[cfg(test)]` module.
fn code_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let mut code = String::new();
    for (i, line) in lines.iter().enumerate() {
        // The test module: `#[cfg(test)]`, maybe more attributes, then `mod`.
        if line.trim() == "#[cfg(test)]" {
            let next = lines[i + 1..].iter().find(|l| !l.trim().starts_with("#["));
            if next.is_some_and(|l| l.trim_start().starts_with("mod ")) {
                break;
            }
        }
        code.push_str(line);
        code.push('\n');
    }
    Some(code)
}

/// The top-level module a file belongs to (`src/sinks/datadog/sink.rs` -> `sinks`).
fn module_of(src: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// Every `crate::<module>` named in `code`, with its line number and the path's text; a
/// group (`use crate::{a, b::c}`, over several lines too) names each of its members.
fn edges(code: &str) -> Vec<(usize, String, String)> {
    let text: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect()
    };
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("crate::") {
        let at = from + i;
        let line = text[..at].matches('\n').count() + 1;
        let after = &text[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // The group's top-level members, up to its matching brace.
            let (mut depth, mut member) = (0usize, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name = ident(member.trim());
                        push(&mut out, line, &name);
                        member.clear();
                        continue;
                    }
                    _ => {}
                }
                member.push(c);
            }
            let name = ident(member.trim());
            push(&mut out, line, &name);
        } else {
            push(&mut out, line, &ident(after));
        }
        from = at + "crate::".len();
    }
    out
}

/// Records `crate::<path>` when `path` names a module.
fn push(out: &mut Vec<(usize, String, String)>, line: usize, path: &str) {
    let module = path.split("::").next().unwrap_or("");
    if !module.is_empty() && module != "self" {
        out.push((line, module.to_string(), format!("crate::{path}")));
    }
}

#[test]
fn no_module_names_one_its_layer_may_not_use() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut broken = Vec::new();
    let mut checked_edges = 0;
    for path in &files {
        let Some(module) = module_of(&src, path) else {
            continue;
        };
        if module == "lib" || module == "main" {
            continue;
        }
        // Test-only files (`*_tests.rs`, `tests.rs`) are no layer's code.
        let Some(code) = code_of(path) else { continue };
        let Some(may) = allowed.get(module.as_str()) else {
            broken.push(format!(
                "{}: module `{module}` is not in tests/walls.rs ALLOWED: place it in a layer",
                path.display()
            ));
            continue;
        };
        for (line, target, full) in edges(&code) {
            checked_edges += 1;
            if target == module {
                continue;
            }
            let ok = may.contains(&target.as_str())
                && !(module == "config" && target == "api" && !full.starts_with(API_FROM_CONFIG));
            if !ok {
                broken.push(format!(
                    "{}:{line}: `{module}` may not use `{full}`",
                    path.strip_prefix(&src).unwrap_or(path).display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layering walls crossed:\n{}",
        broken.join("\n")
    );
    // A walk or a parser that found nothing would pass the check above.
    assert!(
        files.len() >= 50 && checked_edges >= 100,
        "the checker saw {} files and {checked_edges} edges",
        files.len()
    );
}

#[test]
fn no_source_file_is_over_600_lines_outside_its_tests() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let n = code_of(p)?.lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", p.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
    assert!(files.len() >= 50, "only {} source files seen", files.len());
}

#[test]
fn the_checker_sees_edges_and_stops_at_tests() {
    let e = edges("use crate::sinks::datadog::EventQueue; // crate::api in a comment\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].1, "sinks");
    assert_eq!(e[0].2, "crate::sinks::datadog::EventQueue");
    let g = edges("use crate::{\n    alert,\n    sinks::{datadog, prometheus},\n};\n");
    let names: Vec<&str> = g.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(names, ["alert", "sinks"]);
    let dir = std::env::temp_dir().join(format!("walls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let f = dir.join("x.rs");
    std::fs::write(
        &f,
        "use crate::a;\n#[cfg(test)]\nfn t() { crate::c }\n#[cfg(test)]\n#[path = \"t.rs\"]\nmod tests { use crate::b; }\n",
    )
    .expect("w");
    let code = code_of(&f).expect("code");
    assert!(code.contains("crate::a") && code.contains("crate::c") && !code.contains("crate::b"));
    let _ = std::fs::remove_dir_all(&dir);
}
