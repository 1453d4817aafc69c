//! statsd_exporter's mapping file (`prometheus.mapping_file`): the YAML as statsd_exporter
//! documents it, read with the same defaults and checks, compiled once into a [`Mapper`].
//!
//! What a rule does to a metric is in `mapping_match.rs`; when it is applied (once per
//! context, when the exposition first sees it) is in `exposition.rs`.
//!
//! Read and accepted, as statsd_exporter reads them: `mappings` (`match`, `match_type`
//! `glob`|`regex`, `name`, `labels`, `help`, `action` `map`|`drop`, `match_metric_type`
//! `counter`|`gauge`|`observer` (`timer` too), `honor_labels`, `ttl`, `observer_type` (or the
//! deprecated `timer_type`) `summary`|`histogram`, `buckets` / `histogram_options.buckets`,
//! `quantiles` / `summary_options.quantiles`, `scale`), and `defaults` (`observer_type`,
//! `timer_type`, `buckets`, `quantiles`, `match_type`, `glob_disable_ordering`, `ttl`,
//! `summary_options`, `histogram_options`). Accepted but without effect, because tallyd's
//! summaries are per-window quantiles and it exports no native histograms: a quantile's
//! `error`, `max_age` / `max_summary_age`, `age_buckets` / `summary_age_buckets`, `buf_cap` /
//! `stream_buffer_size`, `native_histogram_bucket_factor`, `native_histogram_max_buckets`.
//! Any other key is an error naming its line.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::base::error::ConfigError;

/// The Prometheus client libraries' default buckets, which statsd_exporter uses too.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileYaml {
    #[serde(default)]
    defaults: DefaultsYaml,
    #[serde(default)]
    mappings: Vec<MappingYaml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsYaml {
    observer_type: Option<String>,
    timer_type: Option<String>,
    buckets: Option<Vec<f64>>,
    quantiles: Option<Vec<Objective>>,
    match_type: Option<String>,
    #[serde(default)]
    glob_disable_ordering: bool,
    ttl: Option<GoDuration>,
    summary_options: Option<SummaryYaml>,
    histogram_options: Option<HistogramYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingYaml {
    #[serde(rename = "match")]
    matches: Spanned<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    observer_type: Option<String>,
    timer_type: Option<String>,
    buckets: Option<Vec<f64>>,
    quantiles: Option<Vec<Objective>>,
    match_type: Option<String>,
    help: Option<String>,
    action: Option<String>,
    match_metric_type: Option<String>,
    #[serde(default)]
    honor_labels: bool,
    ttl: Option<GoDuration>,
    summary_options: Option<SummaryYaml>,
    histogram_options: Option<HistogramYaml>,
    scale: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Objective {
    quantile: f64,
    #[serde(default)]
    #[allow(dead_code)]
    error: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SummaryYaml {
    quantiles: Option<Vec<Objective>>,
    #[serde(alias = "max_summary_age")]
    max_age: Option<GoDuration>,
    #[serde(alias = "summary_age_buckets")]
    age_buckets: Option<u32>,
    #[serde(alias = "stream_buffer_size")]
    buf_cap: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct HistogramYaml {
    buckets: Option<Vec<f64>>,
    native_histogram_bucket_factor: Option<f64>,
    native_histogram_max_buckets: Option<u32>,
}

/// A Go duration (`1m20s`, `500ms`, `0`), or a bare number of seconds.
#[derive(Debug, Clone, Copy)]
struct GoDuration(Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) if n >= 0.0 && n.is_finite() => Ok(GoDuration(Duration::from_secs_f64(n))),
            Raw::Num(_) => Err(serde::de::Error::custom("a duration cannot be negative")),
            Raw::Text(t) => parse_go_duration(&t)
                .map(GoDuration)
                .ok_or_else(|| serde::de::Error::custom(format!("{t:?} is not a duration"))),
        }
    }
}

/// Parses Go's `time.ParseDuration` syntax (without a sign): `0`, or numbers each followed by
/// `ns`, `us`, `µs`, `ms`, `s`, `m` or `h`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * secs;
    }
    total.is_finite().then(|| Duration::from_secs_f64(total))
}

/// How a timer, histogram or distribution is exported.
#[derive(Debug, Clone, PartialEq)]
pub enum Observer {
    /// A summary: per-window quantiles (these, or `aggregate.percentiles` when `None`), and
    /// cumulative `_sum` and `_count`.
    Summary(Option<Arc<[f64]>>),
    /// A classic cumulative histogram with these upper bounds (`+Inf` added).
    Histogram(Arc<[f64]>),
}

/// What a rule (or the defaults) says about the series it makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Sampled kinds as a histogram (true) or summary; `None`: `prometheus.observer_type`.
    pub histogram: Option<bool>,
    /// Histogram buckets (the rule's, else the defaults'); `None`: tallyd's.
    pub buckets: Option<Arc<[f64]>>,
    /// Summary quantiles (the rule's, else the defaults'); `None`: `aggregate.percentiles`.
    pub quantiles: Option<Arc<[f64]>>,
    /// Expiry of the series; `Some(ZERO)` never expires; `None`: `prometheus.series_ttl`.
    pub ttl: Option<Duration>,
    /// Every value is multiplied by this.
    pub scale: Option<f64>,
    /// `# HELP` text.
    pub help: Option<String>,
}

/// `match_metric_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MatchKind {
    Counter,
    Gauge,
    Observer,
}

#[derive(Debug)]
pub(super) enum Matcher {
    /// Dot-separated components, each a literal or a pattern with `*`.
    Glob(Vec<Box<str>>),
    Regex(Regex),
}

/// One compiled rule.
#[derive(Debug)]
pub(super) struct Rule {
    pub(super) matcher: Matcher,
    pub(super) name: String,
    /// Label name and value template, in name order.
    pub(super) labels: Vec<(String, String)>,
    pub(super) kind: Option<MatchKind>,
    pub(super) drop: bool,
    pub(super) honor_labels: bool,
    /// Index into [`Mapper::shapes`].
    pub(super) shape: u32,
}

/// A compiled mapping file.
#[derive(Debug, Default)]
pub struct Mapper {
    pub(super) rules: Vec<Rule>,
    /// Glob rules before regex rules (statsd_exporter tries every glob rule first).
    pub(super) globs: Vec<usize>,
    pub(super) regexes: Vec<usize>,
    pub(super) glob_disable_ordering: bool,
    /// Shape 0 is for metrics no rule matched (the `defaults`); then one per rule.
    pub shapes: Vec<Shape>,
}

fn observer_name(
    key: &str,
    v: Option<&String>,
    deprecated: Option<&String>,
) -> Result<Option<bool>, String> {
    match v.or(deprecated).map(String::as_str) {
        None | Some("") => Ok(None),
        Some("summary") => Ok(Some(false)),
        Some("histogram") => Ok(Some(true)),
        Some(other) => Err(format!("{key} {other:?} is not one of summary, histogram")),
    }
}

fn check_buckets(b: &[f64]) -> Result<Arc<[f64]>, String> {
    let mut v: Vec<f64> = b.iter().copied().filter(|x| *x != f64::INFINITY).collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err("buckets must be finite numbers".into());
    }
    v.sort_by(f64::total_cmp);
    v.dedup();
    Ok(v.into())
}

fn check_quantiles(q: &[Objective]) -> Result<Arc<[f64]>, String> {
    if q.iter().any(|o| !(o.quantile > 0.0 && o.quantile <= 1.0)) {
        return Err("a quantile must be in (0, 1]".into());
    }
    Ok(q.iter().map(|o| o.quantile).collect())
}

fn label_name_ok(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// statsd_exporter's check of a `name`: letters, digits, `_` and `$n` / `${n}` references,
/// not starting with a digit.
fn name_template_ok(n: &str) -> bool {
    let b = n.as_bytes();
    let mut i = 0;
    let mut first = true;
    while i < b.len() {
        if b[i] == b'$' {
            let mut j = i + 1;
            let braced = b.get(j) == Some(&b'{');
            if braced {
                j += 1;
            }
            let d0 = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j == d0 {
                return false;
            }
            if braced {
                if b.get(j) != Some(&b'}') {
                    return false;
                }
                j += 1;
            }
            i = j;
        } else {
            let c = b[i];
            let ok = c.is_ascii_alphabetic() || c == b'_' || (!first && c.is_ascii_digit());
            if !ok {
                return false;
            }
            i += 1;
        }
        first = false;
    }
    !b.is_empty()
}

impl Mapper {
    /// Reads and compiles the mapping file at `path`; errors name the key
    /// `prometheus.mapping_file` and, where the YAML says, the line.
    pub fn load(path: &str) -> Result<Mapper, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid(
                "prometheus.mapping_file",
                format!(": cannot read {path}: {e}"),
            )
        })?;
        Mapper::parse(&text).map_err(|mut e| {
            e.key = "prometheus.mapping_file".into();
            e
        })
    }

    /// Compiles the YAML text of a mapping file.
    pub fn parse(text: &str) -> Result<Mapper, ConfigError> {
        let file: FileYaml = if text.trim().is_empty() {
            FileYaml::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                let loc = e.location();
                let msg = first_line(&e.to_string()).to_string();
                let at = loc.map_or(String::new(), |l| {
                    format!(" line {}, column {}:", l.line(), l.column())
                });
                let mut c = ConfigError::invalid("", format!(":{at} {msg}"));
                c.line = loc.map(|l| l.line() as usize);
                c.column = loc.map(|l| l.column() as usize);
                c
            })?
        };
        compile(file)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn compile(file: FileYaml) -> Result<Mapper, ConfigError> {
    let d = &file.defaults;
    let bad = |line: Option<u64>, msg: String| {
        let at = line.map_or(String::new(), |l| format!(" line {l}:"));
        let mut c = ConfigError::invalid("", format!(":{at} {msg}"));
        c.line = line.map(|l| l as usize);
        c
    };
    let d_hist = observer_name(
        "defaults.observer_type",
        d.observer_type.as_ref(),
        d.timer_type.as_ref(),
    )
    .map_err(|m| bad(None, m))?;
    let d_buckets = match d
        .histogram_options
        .as_ref()
        .and_then(|h| h.buckets.as_ref())
        .filter(|b| !b.is_empty())
        .or(d.buckets.as_ref().filter(|b| !b.is_empty()))
    {
        Some(b) => Some(check_buckets(b).map_err(|m| bad(None, m))?),
        None => None,
    };
    let d_quantiles = match d
        .summary_options
        .as_ref()
        .and_then(|s| s.quantiles.as_ref())
        .filter(|q| !q.is_empty())
        .or(d.quantiles.as_ref().filter(|q| !q.is_empty()))
    {
        Some(q) => Some(check_quantiles(q).map_err(|m| bad(None, m))?),
        None => None,
    };
    let d_regex = match d.match_type.as_deref() {
        None | Some("") | Some("glob") => false,
        Some("regex") => true,
        Some(o) => return Err(bad(None, format!("match_type {o:?} is not glob or regex"))),
    };
    // An explicit `ttl: 0` in the defaults means never expire; none means `series_ttl`.
    let d_ttl = d.ttl.map(|t| t.0);
    let mut m = Mapper {
        glob_disable_ordering: d.glob_disable_ordering,
        ..Mapper::default()
    };
    m.shapes.push(Shape {
        histogram: d_hist,
        buckets: d_buckets.clone(),
        quantiles: d_quantiles.clone(),
        ttl: d_ttl,
        scale: None,
        help: None,
    });
    for (i, r) in file.mappings.into_iter().enumerate() {
        let line = Some(r.matches.referenced.line());
        let at = |msg: String| bad(line, format!("mappings[{i}]: {msg}"));
        for k in r.labels.keys() {
            if !label_name_ok(k) {
                return Err(at(format!("invalid label name {k:?}")));
            }
        }
        if r.name.is_empty() {
            return Err(at("the mapping sets no metric name".into()));
        }
        if !name_template_ok(&r.name) {
            return Err(at(format!("invalid metric name {:?}", r.name)));
        }
        let regex = match r.match_type.as_deref() {
            None | Some("") => d_regex,
            Some("glob") => false,
            Some("regex") => true,
            Some(o) => return Err(at(format!("match_type {o:?} is not glob or regex"))),
        };
        let pattern = r.matches.value.clone();
        let matcher = if regex {
            Matcher::Regex(
                Regex::new(&pattern).map_err(|e| at(format!("invalid regex {pattern:?}: {e}")))?,
            )
        } else {
            if pattern.is_empty() || pattern.split('.').any(str::is_empty) {
                return Err(at(format!("invalid match {pattern:?}")));
            }
            Matcher::Glob(pattern.split('.').map(Box::from).collect())
        };
        let drop = match r.action.as_deref() {
            None | Some("") | Some("map") => false,
            Some("drop") => true,
            Some(o) => return Err(at(format!("action {o:?} is not map or drop"))),
        };
        let kind = match r.match_metric_type.as_deref() {
            None | Some("") => None,
            Some("counter") => Some(MatchKind::Counter),
            Some("gauge") => Some(MatchKind::Gauge),
            Some("observer") | Some("timer") => Some(MatchKind::Observer),
            Some(o) => return Err(at(format!("invalid metric type {o:?}"))),
        };
        let hist = observer_name(
            "observer_type",
            r.observer_type.as_ref(),
            r.timer_type.as_ref(),
        )
        .map_err(&at)?
        .or(d_hist);
        let h_buckets = r
            .histogram_options
            .as_ref()
            .and_then(|h| h.buckets.as_ref());
        if h_buckets.is_some() && r.buckets.is_some() {
            return Err(at(
                "cannot use buckets in both the top level and histogram options".into(),
            ));
        }
        let s_quantiles = r
            .summary_options
            .as_ref()
            .and_then(|s| s.quantiles.as_ref());
        if s_quantiles.is_some() && r.quantiles.is_some() {
            return Err(at(
                "cannot use quantiles in both the top level and summary options".into(),
            ));
        }
        if hist == Some(true) && r.summary_options.is_some() {
            return Err(at(
                "cannot use histogram observer and summary options at the same time".into(),
            ));
        }
        if hist == Some(false) && r.histogram_options.is_some() {
            return Err(at(
                "cannot use summary observer and histogram options at the same time".into(),
            ));
        }
        let buckets = match h_buckets.or(r.buckets.as_ref()).filter(|b| !b.is_empty()) {
            Some(b) => Some(check_buckets(b).map_err(&at)?),
            None => None,
        };
        let quantiles = match s_quantiles
            .or(r.quantiles.as_ref())
            .filter(|q| !q.is_empty())
        {
            Some(q) => Some(check_quantiles(q).map_err(&at)?),
            None => None,
        };
        if let Some(s) = r.scale {
            if !s.is_finite() || s <= 0.0 {
                return Err(at("scale must be a positive number".into()));
            }
        }
        let ttl = match r.ttl.map(|t| t.0) {
            Some(t) if !t.is_zero() => Some(t),
            // `0` (or none) falls back to the defaults' ttl, as in statsd_exporter.
            _ => d_ttl,
        };
        m.shapes.push(Shape {
            histogram: hist,
            buckets: buckets.or_else(|| d_buckets.clone()),
            quantiles: quantiles.or_else(|| d_quantiles.clone()),
            ttl,
            scale: r.scale,
            help: r.help,
        });
        if regex {
            m.regexes.push(m.rules.len());
        } else {
            m.globs.push(m.rules.len());
        }
        m.rules.push(Rule {
            matcher,
            name: r.name,
            labels: r.labels.into_iter().collect(),
            kind,
            drop,
            honor_labels: r.honor_labels,
            shape: (i + 1) as u32,
        });
    }
    Ok(m)
}

#[cfg(test)]
#[path = "mapping_tests.rs"]
mod tests;
