//! Checks shared by the fuzz targets, written independently of tallyd's own renderers.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
pub fn valid_metric_name(s: &str) -> bool {
    let mut c = s.bytes();
    matches!(c.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && c.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
pub fn valid_label_name(s: &str) -> bool {
    let mut c = s.bytes();
    matches!(c.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && c.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

const SUFFIXES: [&str; 7] = [
    "", "_total", "_sum", "_count", "_bucket", "_created", "_info",
];

/// Parses `name{labels} value` and returns (name, labels, value), or why it does not parse.
fn sample(line: &str) -> Result<(&str, Vec<(String, String)>, f64), String> {
    let end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value: {line:?}"))?;
    let name = &line[..end];
    if !valid_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut r = r;
        loop {
            if let Some(after) = r.strip_prefix('}') {
                r = after;
                break;
            }
            let eq = r
                .find('=')
                .ok_or_else(|| format!("label without '=': {line:?}"))?;
            let lname = &r[..eq];
            if !valid_label_name(lname) {
                return Err(format!("bad label name {lname:?} in {line:?}"));
            }
            r = r[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| format!("unquoted label value: {line:?}"))?;
            let mut value = String::new();
            let mut chars = r.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err(format!("unterminated label value: {line:?}")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in {line:?}")),
                    },
                    Some((_, '\n')) => return Err(format!("raw newline in {line:?}")),
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((lname.to_string(), value));
            r = &r[close + 1..];
            if let Some(after) = r.strip_prefix(',') {
                r = after;
            } else if !r.starts_with('}') {
                return Err(format!("expected ',' or '}}' in {line:?}"));
            }
        }
        rest = r;
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value: {line:?}"))?;
    let mut parts = rest.split(' ');
    let v = parts.next().unwrap_or_default();
    let value = match v {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ if v
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            && !v.is_empty() =>
        {
            v.parse::<f64>()
                .map_err(|e| format!("bad value {v:?}: {e}"))?
        }
        _ => return Err(format!("bad value {v:?} in {line:?}")),
    };
    if let Some(ts) = parts.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp in {line:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("trailing text in {line:?}"));
    }
    let mut seen = HashSet::new();
    for (k, _) in &labels {
        if !seen.insert(k.as_str()) {
            return Err(format!("label {k:?} twice in {line:?}"));
        }
    }
    Ok((name, labels, value))
}

/// Checks a whole `/metrics` body: every line parses, every sample belongs to the family of
/// the `# TYPE` line before it, no family is declared twice, no series appears twice, and
/// counters and summary counts are finite. Panics with the reason otherwise.
pub fn check_exposition(text: &str, om: bool) {
    let mut family: Option<(String, String)> = None;
    let mut families = HashSet::new();
    let mut series = HashSet::new();
    let body = if om {
        text.strip_suffix("# EOF\n")
            .unwrap_or_else(|| panic!("OpenMetrics body without a final # EOF"))
    } else {
        text
    };
    assert!(
        body.is_empty() || body.ends_with('\n'),
        "body does not end in a newline"
    );
    for line in body.lines() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let name = help.split(' ').next().unwrap_or_default();
            assert!(valid_metric_name(name), "bad HELP name in {line:?}");
            continue;
        }
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t
                .split_once(' ')
                .unwrap_or_else(|| panic!("TYPE without a type: {line:?}"));
            assert!(valid_metric_name(name), "bad TYPE name in {line:?}");
            assert!(
                [
                    "counter",
                    "gauge",
                    "summary",
                    "histogram",
                    "untyped",
                    "unknown",
                    "info"
                ]
                .contains(&kind),
                "unknown type in {line:?}"
            );
            assert!(
                families.insert(name.to_string()),
                "family {name} declared twice"
            );
            family = Some((name.to_string(), kind.to_string()));
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line:?}");
        let (name, mut labels, value) =
            sample(line).unwrap_or_else(|e| panic!("unparsable sample line: {e}"));
        let (fam, kind) = family
            .as_ref()
            .unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        let base = if kind == "counter" && !om {
            fam.strip_suffix("_total").unwrap_or(fam)
        } else {
            fam.as_str()
        };
        assert!(
            SUFFIXES.iter().any(|s| format!("{base}{s}") == name),
            "sample {name} outside its family {fam}"
        );
        if kind == "counter" || name.ends_with("_count") {
            // StatsD counters may be decremented, so a negative total is allowed; a
            // non-finite one never is.
            assert!(value.is_finite(), "counter {line:?} is not finite");
        }
        labels.sort();
        assert!(
            series.insert((name.to_string(), labels)),
            "series twice: {line:?}"
        );
    }
}

/// The labels of a series as a map, for comparisons.
pub fn label_map(labels: &[(String, String)]) -> BTreeMap<String, String> {
    labels.iter().cloned().collect()
}
