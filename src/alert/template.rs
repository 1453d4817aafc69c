//! Message and runbook templates (`{{ name }}` placeholders) and how values are written in
//! them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::base::error::ConfigError;

/// A message or runbook template: text with `{{ name }}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var(String),
}

/// Placeholders a template may use besides `tags.KEY` / `labels.KEY`.
pub const TEMPLATE_VARS: &[&str] = &[
    "alert",
    "metric",
    "aggregation",
    "value",
    "warn",
    "critical",
    "threshold",
    "severity",
    "direction",
    "for",
    "host",
    "tags",
    "state",
];

impl Template {
    /// Parses `{{ name }}` placeholders (`{{ $name }}` and `{{ .name }}` are read alike).
    ///
    /// # Errors
    /// An unclosed `{{` or an unknown placeholder. The error's key is empty: the caller names
    /// the setting with [`ConfigError::within`] (`message`, `runbook`).
    pub fn parse(s: &str) -> Result<Template, ConfigError> {
        let invalid = |reason: String| ConfigError::invalid("", format!(": {reason}"));
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| invalid(format!("unclosed {{{{ in {s:?}")))?;
            let name = after[..close]
                .trim()
                .trim_start_matches('$')
                .trim_start_matches('.');
            let known = TEMPLATE_VARS.contains(&name)
                || name
                    .strip_prefix("tags.")
                    .or_else(|| name.strip_prefix("labels."))
                    .is_some_and(|k| !k.is_empty());
            if !known {
                return Err(invalid(format!(
                    "unknown placeholder {{{{{name}}}}}; use one of {} or tags.KEY",
                    TEMPLATE_VARS.join(", ")
                )));
            }
            parts.push(Part::Var(name.to_string()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Whether the template is empty (renders to nothing).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Fills the placeholders; `lookup` answers names, `tags` answers `tags.KEY`.
    pub fn render(
        &self,
        lookup: &dyn Fn(&str) -> String,
        tags: &BTreeMap<String, String>,
    ) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => {
                    if let Some(k) = v
                        .strip_prefix("tags.")
                        .or_else(|| v.strip_prefix("labels."))
                    {
                        out.push_str(tags.get(k).map(String::as_str).unwrap_or(""));
                    } else {
                        out.push_str(&lookup(v));
                    }
                }
            }
        }
        out
    }
}

/// Formats a value for people: integers without a fraction, others with up to 3 decimals.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let mut s = String::new();
    let _ = write!(s, "{v:.3}");
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    s
}
