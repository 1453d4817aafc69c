//! The Datadog Agent's DogStatsD mapper profiles (`dogstatsd_mapper_profiles`): a metric whose
//! name starts with a profile's prefix is renamed by the first of its mappings that matches,
//! and the mapping's tags (with `$1`, `${1}` for the pattern's groups) are added. A `glob`
//! match (the default) may hold letters, digits, `-`, `_`, `.` and single `*`, each `*`
//! matching one dot-free part; a `regex` match is a regular expression over the whole name.
//! As in the Agent, mapping happens before the namespace is added.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// One profile of `statsd.mapper_profiles`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapperProfile {
    /// The profile's name (for messages).
    pub name: String,
    /// Only names starting with this are mapped by the profile (`*` = every name).
    pub prefix: String,
    /// Tried in order; the first that matches wins.
    pub mappings: Vec<MapperMapping>,
}

/// One mapping of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapperMapping {
    /// The pattern the whole name must match.
    #[serde(rename = "match")]
    pub pattern: String,
    /// `glob` (default) or `regex`.
    #[serde(default = "glob")]
    pub match_type: String,
    /// The new name; `$1` / `${1}` stand for the pattern's groups.
    pub name: String,
    /// Tags added, `key = "value"`, values expanded as the name.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn glob() -> String {
    "glob".into()
}

/// One compiled mapping: the pattern, the name template, the tag templates.
type Compiled = (Regex, String, Vec<(String, String)>);

/// Profiles compiled for matching: each prefix with its mappings.
#[derive(Debug, Clone)]
pub struct Mapper {
    profiles: Vec<(String, Vec<Compiled>)>,
}

impl PartialEq for Mapper {
    fn eq(&self, other: &Mapper) -> bool {
        self.profiles.len() == other.profiles.len()
            && self
                .profiles
                .iter()
                .zip(&other.profiles)
                .all(|(a, b)| a.0 == b.0 && a.1.len() == b.1.len())
    }
}

impl Mapper {
    /// Compiles `profiles`; the error says which mapping is wrong and why.
    pub fn new(profiles: &[MapperProfile]) -> Result<Mapper, String> {
        let mut out = Vec::new();
        for p in profiles {
            let mut maps = Vec::new();
            for (i, m) in p.mappings.iter().enumerate() {
                let at = || format!("profile {:?}, mapping {i}", p.name);
                if m.name.is_empty() || m.pattern.is_empty() {
                    return Err(format!("{}: match and name are required", at()));
                }
                let re = match m.match_type.as_str() {
                    "glob" => {
                        let ok = m
                            .pattern
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_*.".contains(&b));
                        if !ok || m.pattern.contains("**") {
                            return Err(format!(
                                "{}: glob {:?} may hold only letters, digits, - _ . and single *",
                                at(),
                                m.pattern
                            ));
                        }
                        m.pattern.replace('.', "\\.").replace('*', "([^.]*)")
                    }
                    "regex" => m.pattern.clone(),
                    other => {
                        return Err(format!(
                            "{}: match_type {other:?} is not glob or regex",
                            at()
                        ))
                    }
                };
                let re = Regex::new(&format!("^(?:{re})$"))
                    .map_err(|e| format!("{}: {:?} does not compile: {e}", at(), m.pattern))?;
                let tags = m.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                maps.push((re, m.name.clone(), tags));
            }
            out.push((p.prefix.clone(), maps));
        }
        Ok(Mapper { profiles: out })
    }

    /// The new name and the tags to add for `name`, or None when no mapping matches.
    pub fn map(&self, name: &str) -> Option<(String, Vec<String>)> {
        for (prefix, maps) in &self.profiles {
            if prefix != "*" && !name.starts_with(prefix.as_str()) {
                continue;
            }
            for (re, to, tags) in maps {
                let Some(caps) = re.captures(name) else {
                    continue;
                };
                let expand = |t: &str| {
                    let mut s = String::new();
                    caps.expand(t, &mut s);
                    s
                };
                let tags = tags
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", expand(v)))
                    .collect();
                return Some((expand(to), tags));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> MapperProfile {
        MapperProfile {
            name: "airflow".into(),
            prefix: "airflow.".into(),
            mappings: vec![
                MapperMapping {
                    pattern: "airflow.job.duration_sec.*.*".into(),
                    match_type: glob(),
                    name: "airflow.job.duration".into(),
                    tags: [("job_type", "$1"), ("job_name", "${2}")]
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .into_iter()
                        .collect(),
                },
                MapperMapping {
                    pattern: r"airflow\.(\w+)_start".into(),
                    match_type: "regex".into(),
                    name: "airflow.start".into(),
                    tags: [("what".to_string(), "$1".to_string())]
                        .into_iter()
                        .collect(),
                },
            ],
        }
    }

    #[test]
    fn the_agents_profile_examples() {
        let m = Mapper::new(&[profile()]).expect("compiles");
        let (name, mut tags) = m
            .map("airflow.job.duration_sec.scheduler.backfill")
            .expect("mapped");
        tags.sort();
        assert_eq!(name, "airflow.job.duration");
        assert_eq!(tags, vec!["job_name:backfill", "job_type:scheduler"]);
        assert_eq!(
            m.map("airflow.dag_start"),
            Some(("airflow.start".into(), vec!["what:dag".into()]))
        );
        // A glob's * does not cross a dot; other prefixes are not mapped.
        assert_eq!(m.map("airflow.job.duration_sec.a.b.c"), None);
        assert_eq!(m.map("other.dag_start"), None);
    }

    #[test]
    fn bad_patterns_are_refused() {
        let mut p = profile();
        p.mappings[0].pattern = "airflow.**".into();
        assert!(Mapper::new(&[p.clone()]).is_err());
        p.mappings[0].pattern = "a(b".into();
        assert!(Mapper::new(&[p.clone()]).is_err());
        p.mappings[0].pattern = "a".into();
        p.mappings[0].match_type = "exact".into();
        assert!(Mapper::new(&[p]).unwrap_err().contains("match_type"));
    }
}
