//! Low-level writers for the Prometheus text and OpenMetrics exposition formats.

/// Content type of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

use std::fmt::Write as _;

/// `# HELP` and `# TYPE` lines. In the text format a counter family is named by its
/// `_total` sample; in OpenMetrics by its base name.
pub fn family_header(out: &mut String, name: &str, kind: &str, help: &str, om: bool) {
    let suffix = if kind == "counter" && !om {
        "_total"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "# HELP {name}{suffix} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(out, "# TYPE {name}{suffix} {kind}");
}

/// One sample line. `labels` is already rendered (`a="b",c="d"`), possibly empty.
pub fn sample(out: &mut String, name: &str, suffix: &str, labels: &str, value: f64) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
    out.push(' ');
    value_into(out, value);
    out.push('\n');
}

/// Appends `v` as an exposition sample value: `NaN`, `+Inf`, `-Inf`, or Rust's shortest
/// round-tripping decimal form.
pub fn value_into(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Appends `v` escaped for a label value.
pub fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Sanitises a statsd name into the Prometheus metric-name charset.
pub fn sanitize_name(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 1);
    sanitize_name_into(&mut s, name);
    s
}

/// Appends `name` sanitised (see [`sanitize_name`]) to `out`.
pub fn sanitize_name_into(out: &mut String, name: &str) {
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
}

/// Sanitises a tag key into a label name (`[a-zA-Z0-9_]`, a leading digit gets a `_` prefix; `__*`, `quantile` and `le` get an `exported_` prefix).
pub fn sanitize_label(key: &str) -> String {
    let mut s = String::with_capacity(key.len() + 1);
    sanitize_label_into(&mut s, key);
    s
}

/// Appends `key` sanitised (see [`sanitize_label`]) to `out`.
pub fn sanitize_label_into(out: &mut String, key: &str) {
    let start = out.len();
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    let s = &out[start..];
    if s.starts_with("__") || s == "quantile" || s == "le" {
        out.insert_str(start, "exported_");
    }
}
