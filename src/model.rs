//! The data model shared by sources, the aggregator and sinks: metric kinds, contexts, events
//! and service checks.

use std::hash::{Hash, Hasher};

/// The six DogStatsD metric types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Set = 2,
    Timer = 3,
    Histogram = 4,
    Distribution = 5,
}

impl MetricKind {
    pub const ALL: [MetricKind; 6] = [
        MetricKind::Counter,
        MetricKind::Gauge,
        MetricKind::Set,
        MetricKind::Timer,
        MetricKind::Histogram,
        MetricKind::Distribution,
    ];

    /// The statsd type name, as used in documentation and conflict-renamed Prometheus names.
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Set => "set",
            MetricKind::Timer => "timer",
            MetricKind::Histogram => "histogram",
            MetricKind::Distribution => "distribution",
        }
    }

    /// Timers, histograms and distributions keep a distribution of samples per window.
    pub fn is_sampled(self) -> bool {
        matches!(
            self,
            MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution
        )
    }
}

/// A metric's identity: kind, name and the sorted, de-duplicated tag set.
///
/// Stored as one string, `name` followed by `,tag` for each tag, so that a context costs a single
/// allocation and can be compared against a borrowed line without building anything. Names may
/// contain `,`; `name_len` says where the name ends. Tags cannot contain `,` (it separates them
/// on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Hash of kind and key, computed once (see [`Context::hash_code`]); first, so that
    /// comparing two different contexts usually stops here.
    hash: u64,
    kind: MetricKind,
    name_len: u32,
    key: Box<str>,
}

impl Context {
    /// Builds a context from a name and tags that are already sorted and de-duplicated.
    pub fn new(kind: MetricKind, name: &str, sorted_tags: &[&str]) -> Context {
        let mut key = String::with_capacity(
            name.len() + sorted_tags.iter().map(|t| t.len() + 1).sum::<usize>(),
        );
        key.push_str(name);
        for t in sorted_tags {
            key.push(',');
            key.push_str(t);
        }
        Context {
            hash: key_hash(kind, name.len() as u32, &key),
            kind,
            name_len: name.len() as u32,
            key: key.into_boxed_str(),
        }
    }

    /// A hash of the context, computed at creation with a per-process random seed: sinks that
    /// index series by context use it instead of hashing the whole key on every flush.
    pub fn hash_code(&self) -> u64 {
        self.hash
    }

    /// Builds a context from unsorted tags (sorts and de-duplicates them).
    pub fn from_unsorted(kind: MetricKind, name: &str, tags: &[&str]) -> Context {
        let mut tags: Vec<&str> = tags.iter().copied().filter(|t| !t.is_empty()).collect();
        tags.sort_unstable();
        tags.dedup();
        Context::new(kind, name, &tags)
    }

    pub fn kind(&self) -> MetricKind {
        self.kind
    }

    pub fn name(&self) -> &str {
        &self.key[..self.name_len as usize]
    }

    /// The tags, in sorted order.
    pub fn tags(&self) -> impl Iterator<Item = &str> + '_ {
        let rest = &self.key[self.name_len as usize..];
        rest.split(',').skip(1)
    }

    /// True when this context equals `kind`, `name` and the sorted tags given as byte slices.
    pub fn matches(&self, kind: MetricKind, name: &[u8], sorted_tags: &[&[u8]]) -> bool {
        if self.kind != kind || self.name_len as usize != name.len() {
            return false;
        }
        let key = self.key.as_bytes();
        if &key[..name.len()] != name {
            return false;
        }
        let mut rest = &key[name.len()..];
        for t in sorted_tags {
            if rest.first() != Some(&b',')
                || rest.len() < t.len() + 1
                || &rest[1..t.len() + 1] != *t
            {
                return false;
            }
            rest = &rest[t.len() + 1..];
        }
        rest.is_empty()
    }

    /// Heap bytes held by this context, for memory accounting.
    pub fn heap_size(&self) -> usize {
        self.key.len()
    }
}

impl Hash for Context {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal contexts have equal `hash` (it is computed from kind, name length and key).
        state.write_u64(self.hash);
    }
}

fn key_hash(kind: MetricKind, name_len: u32, key: &str) -> u64 {
    use std::hash::BuildHasher;
    static STATE: std::sync::OnceLock<foldhash::quality::RandomState> = std::sync::OnceLock::new();
    let mut h = STATE.get_or_init(Default::default).build_hasher();
    h.write_u8(kind as u8);
    h.write_u32(name_len);
    h.write(key.as_bytes());
    h.finish()
}

/// Hashes a context given as borrowed parts; equal contexts hash equally whatever their origin.
pub fn context_hash(
    hasher: &foldhash::quality::FixedState,
    kind: MetricKind,
    name: &[u8],
    sorted_tags: &[&[u8]],
) -> u64 {
    use std::hash::BuildHasher;
    let mut h = hasher.build_hasher();
    h.write_u8(kind as u8);
    h.write(name);
    for t in sorted_tags {
        h.write_u8(b',');
        h.write(t);
    }
    h.finish()
}

/// Event priority (`p:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Normal,
    Low,
}

/// Event alert type (`t:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertType {
    Info,
    Warning,
    Error,
    Success,
}

/// A DogStatsD event (`_e{..}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub title: String,
    pub text: String,
    pub timestamp: Option<i64>,
    pub hostname: Option<String>,
    pub aggregation_key: Option<String>,
    pub priority: Priority,
    pub source_type: Option<String>,
    pub alert_type: AlertType,
    pub tags: Vec<String>,
}

/// A service check status (`0`..`3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

/// A DogStatsD service check (`_sc|..`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCheck {
    pub name: String,
    pub status: CheckStatus,
    pub timestamp: Option<i64>,
    pub hostname: Option<String>,
    pub message: Option<String>,
    pub tags: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_matches_its_parts() {
        let c = Context::from_unsorted(MetricKind::Counter, "a.b", &["z:1", "a:2", "z:1"]);
        assert_eq!(c.name(), "a.b");
        assert_eq!(c.tags().collect::<Vec<_>>(), vec!["a:2", "z:1"]);
        assert!(c.matches(MetricKind::Counter, b"a.b", &[b"a:2", b"z:1"]));
        assert!(!c.matches(MetricKind::Gauge, b"a.b", &[b"a:2", b"z:1"]));
        assert!(!c.matches(MetricKind::Counter, b"a.b", &[b"a:2"]));
        assert!(!c.matches(MetricKind::Counter, b"a.b", &[b"a:2", b"z:1", b"x"]));
        assert!(!c.matches(MetricKind::Counter, b"a.b,a:2", &[b"z:1"]));
    }

    #[test]
    fn name_with_comma_is_kept_whole() {
        let c = Context::new(MetricKind::Gauge, "odd,name", &["t"]);
        assert_eq!(c.name(), "odd,name");
        assert_eq!(c.tags().collect::<Vec<_>>(), vec!["t"]);
        let bare = Context::new(MetricKind::Gauge, "plain", &[]);
        assert_eq!(bare.tags().count(), 0);
    }
}
