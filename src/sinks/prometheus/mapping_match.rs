//! What a compiled mapping file does to one metric: the matching rule (glob rules first, in
//! file order or, with `glob_disable_ordering`, most literal first; then regex rules in file
//! order), its name and labels with the captures substituted, and the labels the metric
//! ends up with. Runs once per context (see `exposition.rs`), never per line.

use super::mapping::{Mapper, MatchKind, Matcher, Rule};
use crate::base::expo::sanitize_label;
use crate::model::{Context, MetricKind};

/// The outcome of mapping one metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// No rule matched: the name is exported as it is (sanitised), with the defaults' shape.
    Unmapped,
    /// A rule with `action: drop` matched.
    Drop,
    /// A rule matched: the exported name (escaped), labels, and the rule's shape.
    Map {
        /// The metric name, escaped as statsd_exporter escapes it.
        name: String,
        /// The rule's labels, captures substituted, in name order.
        labels: Vec<(String, String)>,
        /// A tag sent with the metric wins over a rule label of the same name.
        honor_labels: bool,
        /// Index into [`Mapper::shapes`].
        shape: u32,
    },
}

fn match_kind(kind: MetricKind) -> MatchKind {
    match kind {
        MetricKind::Counter => MatchKind::Counter,
        MetricKind::Gauge | MetricKind::Set => MatchKind::Gauge,
        _ => MatchKind::Observer,
    }
}

/// Matches one dot-free component against a pattern in which each `*` matches any run of
/// characters (the last one as much as is left, the others as little as possible).
fn match_component<'a>(pat: &str, s: &'a str, caps: &mut Vec<&'a str>) -> bool {
    if !pat.contains('*') {
        return pat == s;
    }
    let parts: Vec<&str> = pat.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut at = first.len();
    let end = s.len() - last.len();
    for mid in &parts[1..parts.len() - 1] {
        match s[at..end].find(mid) {
            Some(p) => {
                caps.push(&s[at..at + p]);
                at += p + mid.len();
            }
            None => return false,
        }
    }
    caps.push(&s[at..end]);
    true
}

fn glob_match<'a>(comps: &[Box<str>], parts: &[&'a str], caps: &mut Vec<&'a str>) -> bool {
    caps.clear();
    comps.len() == parts.len()
        && comps
            .iter()
            .zip(parts)
            .all(|(c, p)| match_component(c, p, caps))
}

/// Substitutes `$n` and `${n}` (1-based) in a glob rule's template; a reference past the
/// captures is empty.
fn format_glob(template: &str, caps: &[&str]) -> String {
    let b = template.as_bytes();
    let mut out = String::with_capacity(template.len() + 16);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let braced = b.get(i + 1) == Some(&b'{');
            let d0 = i + 1 + usize::from(braced);
            let mut j = d0;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let closed = !braced || b.get(j) == Some(&b'}');
            if j > d0 && closed {
                let n: usize = template[d0..j].parse().unwrap_or(0);
                if let Some(c) = n.checked_sub(1).and_then(|k| caps.get(k)) {
                    out.push_str(c);
                }
                i = j + usize::from(braced);
                continue;
            }
        }
        let ch = template[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// statsd_exporter's `EscapeMetricName`: every character outside `[a-zA-Z0-9_]` becomes `_`
/// (a `-` right after a `-` is dropped), and a leading digit gets a `_` in front.
pub fn escape_metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        out.push('_');
    }
    let mut prev = '\0';
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !(c == '-' && prev == '-') {
            out.push('_');
        }
        prev = c;
    }
    out
}

impl Mapper {
    /// Maps the statsd metric `name` of `kind`.
    pub fn map(&self, name: &str, kind: MetricKind) -> Mapped {
        let mk = match_kind(kind);
        let fits = |r: &Rule| r.kind.is_none_or(|k| k == mk);
        if !self.globs.is_empty() {
            let parts: Vec<&str> = name.split('.').collect();
            let mut caps = Vec::new();
            let mut best: Option<(usize, Vec<&str>)> = None;
            for &i in &self.globs {
                let r = &self.rules[i];
                let Matcher::Glob(comps) = &r.matcher else {
                    continue;
                };
                if !fits(r) || !glob_match(comps, &parts, &mut caps) {
                    continue;
                }
                if !self.glob_disable_ordering {
                    best = Some((i, std::mem::take(&mut caps)));
                    break;
                }
                // Without ordering, a literal component beats a wildcard at the first
                // position where two matching rules differ; file order breaks ties.
                let better = match &best {
                    None => true,
                    Some((b, _)) => more_literal(comps, &self.rules[*b].matcher),
                };
                if better {
                    best = Some((i, caps.clone()));
                }
            }
            if let Some((i, caps)) = best {
                let r = &self.rules[i];
                return self.outcome(r, format_glob(&r.name, &caps), |t| format_glob(t, &caps));
            }
        }
        for &i in &self.regexes {
            let r = &self.rules[i];
            let Matcher::Regex(re) = &r.matcher else {
                continue;
            };
            let Some(c) = re.captures(name) else {
                continue;
            };
            if !fits(r) {
                continue;
            }
            let expand = |t: &str| {
                let mut s = String::new();
                c.expand(t, &mut s);
                s
            };
            return self.outcome(r, expand(&r.name), expand);
        }
        Mapped::Unmapped
    }

    fn outcome(&self, r: &Rule, name: String, fmt: impl Fn(&str) -> String) -> Mapped {
        if r.drop {
            return Mapped::Drop;
        }
        Mapped::Map {
            name: escape_metric_name(&name),
            labels: r.labels.iter().map(|(k, t)| (k.clone(), fmt(t))).collect(),
            honor_labels: r.honor_labels,
            shape: r.shape,
        }
    }
}

fn more_literal(a: &[Box<str>], b: &Matcher) -> bool {
    let Matcher::Glob(b) = b else { return false };
    for (x, y) in a.iter().zip(b) {
        match (x.contains('*'), y.contains('*')) {
            (false, true) => return true,
            (true, false) => return false,
            _ => {}
        }
    }
    false
}

/// The context a mapped metric is exported as: `name`, the tags sent with it (a tag whose
/// label name a rule label takes is replaced, unless `honor_labels`) and the rule's labels.
/// A `,` in a label value (which separates tags inside a context) becomes `_`.
pub fn mapped_context(
    orig: &Context,
    name: &str,
    labels: &[(String, String)],
    honor_labels: bool,
) -> Context {
    let sent: Vec<(String, &str)> = orig
        .tags()
        .map(|t| match t.split_once(':') {
            Some((k, _)) => (sanitize_label(k), t),
            None => (String::new(), t),
        })
        .collect();
    let mut tags: Vec<String> = Vec::with_capacity(sent.len() + labels.len());
    let taken = |k: &str| sent.iter().any(|(sk, t)| sk == k && t.len() > k.len() + 1);
    let mut replaced: Vec<&str> = Vec::new();
    for (k, v) in labels {
        if honor_labels && taken(k) {
            continue;
        }
        replaced.push(k);
        tags.push(format!("{k}:{}", v.replace(',', "_")));
    }
    for (k, t) in &sent {
        if !replaced.contains(&k.as_str()) {
            tags.push((*t).to_string());
        }
    }
    let refs: Vec<&str> = tags.iter().map(String::as_str).collect();
    Context::from_unsorted(orig.kind(), name, &refs)
}
